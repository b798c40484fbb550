//! Label tables: CSV, `.npy`/`.npz`, FITS binary tables and the MILES parameter file,
//! and the join of labels to spectra by id.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use ndarray::{Array2, ArrayD, ArrayView1, Axis};
use ndarray_npy::{NpzReader, ReadNpyExt};

use super::fits::{self, ColumnData};
use super::{SpectraSet, SurveyError};

/// Missing Teff in `MILES_params.db`.
pub const MILES_MISSING_TEFF: f64 = 99999.0;

/// Missing log g or [Fe/H] in `MILES_params.db`.
pub const MILES_MISSING_OTHER: f64 = 9999.0;

/// A table of labels, one row per object; NaN marks a missing value.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelTable {
    /// The file the table was read from, named in errors.
    pub source: PathBuf,
    /// One id per row.
    pub ids: Vec<String>,
    /// One name per column.
    pub names: Vec<String>,
    /// `ids.len()` × `names.len()` values.
    pub values: Array2<f64>,
    /// Lines of the file left out while reading, each as `line N: reason`.
    pub skipped: Vec<String>,
}

impl LabelTable {
    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.ids.len()
    }

    /// Returns the index of the column `name` (exact match).
    pub fn index_of(&self, name: &str) -> Result<usize, SurveyError> {
        self.names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| SurveyError::UnknownColumn {
                path: self.source.clone(),
                column: name.into(),
                present: self.names.clone(),
            })
    }

    /// Returns the values of column `name`.
    pub fn column(&self, name: &str) -> Result<ArrayView1<'_, f64>, SurveyError> {
        Ok(self.values.column(self.index_of(name)?))
    }

    /// Returns a table with only the columns `names`, in that order.
    pub fn select(&self, names: &[&str]) -> Result<LabelTable, SurveyError> {
        let indices = names
            .iter()
            .map(|name| self.index_of(name))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LabelTable {
            source: self.source.clone(),
            ids: self.ids.clone(),
            names: names.iter().map(|n| n.to_string()).collect(),
            values: self.values.select(Axis(1), &indices),
            skipped: self.skipped.clone(),
        })
    }

    /// Returns the indices of the rows whose every label is finite.
    pub fn complete_rows(&self) -> Vec<usize> {
        (0..self.n_rows())
            .filter(|&i| self.values.row(i).iter().all(|v| v.is_finite()))
            .collect()
    }

    /// Checks that no id appears twice.
    fn check_unique(&self) -> Result<(), SurveyError> {
        let mut seen = HashMap::with_capacity(self.ids.len());
        for (row, id) in self.ids.iter().enumerate() {
            if let Some(first) = seen.insert(id.as_str(), row) {
                return Err(SurveyError::DuplicateId {
                    path: self.source.clone(),
                    id: id.clone(),
                    first,
                    second: row,
                });
            }
        }
        Ok(())
    }
}

/// Reads a label table, choosing the reader by file name: `MILES_params.db` or any
/// `.db` ([`read_miles_params`]), `.csv` ([`read_label_csv`], id in the first column),
/// `.npy`/`.npz` ([`read_label_npy`]) and `.fits`/`.fit`/`.fts` ([`read_label_fits`]).
pub fn read_labels(path: &Path) -> Result<LabelTable, SurveyError> {
    let extension = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "db" => read_miles_params(path),
        "npy" | "npz" => read_label_npy(path),
        "fits" | "fit" | "fts" => read_label_fits(path, None),
        _ => read_label_csv(path, None),
    }
}

/// Reads a CSV table with a header line.
///
/// The id column is `id_column`, or the first column when `None`; every other column is
/// numeric. Empty and non-numeric cells are NaN (missing). Cells and names are trimmed.
pub fn read_label_csv(path: &Path, id_column: Option<&str>) -> Result<LabelTable, SurveyError> {
    let file = File::open(path).map_err(|source| SurveyError::Io {
        path: path.into(),
        source,
    })?;
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(file);
    let csv_error = |e: csv::Error| SurveyError::Parse {
        path: path.into(),
        line: e.position().map_or(0, |p| p.line() as usize),
        message: e.to_string(),
    };

    let header: Vec<String> = reader
        .headers()
        .map_err(csv_error)?
        .iter()
        .map(String::from)
        .collect();
    if header.is_empty() {
        return Err(SurveyError::Parse {
            path: path.into(),
            line: 1,
            message: "no header line; the first line must name the columns".into(),
        });
    }
    let id_index = match id_column {
        None => 0,
        Some(name) => {
            header
                .iter()
                .position(|h| h == name)
                .ok_or_else(|| SurveyError::UnknownColumn {
                    path: path.into(),
                    column: name.into(),
                    present: header.clone(),
                })?
        }
    };
    let names: Vec<String> = header
        .iter()
        .enumerate()
        .filter(|&(j, _)| j != id_index)
        .map(|(_, h)| h.clone())
        .collect();
    let mut ids = Vec::new();
    let mut values = Vec::new();
    for record in reader.records() {
        let record = record.map_err(csv_error)?;
        for (j, cell) in record.iter().enumerate() {
            if j == id_index {
                ids.push(cell.to_string());
            } else {
                values.push(cell.parse::<f64>().unwrap_or(f64::NAN));
            }
        }
    }

    let values = Array2::from_shape_vec((ids.len(), names.len()), values)
        .expect("the CSV reader checks that every record has the header's length");
    let table = LabelTable {
        source: path.into(),
        ids,
        names,
        values,
        skipped: Vec::new(),
    };
    table.check_unique()?;
    Ok(table)
}

/// Reads numeric arrays from `.npy` or `.npz` as a label table.
///
/// A 1-D array is one column named after the array (the file stem for `.npy`, the
/// archive member for `.npz`); a 2-D `N × k` array is `k` columns `name[0]`..`name[k-1]`.
/// Every array must have the same number of rows.
///
/// NOTE: NumPy files carry no ids, so the ids are the row numbers `0`, `1`, .... [`join`]
/// matches no spectrum to them: line such tables up with spectra by row order instead.
/// Values may be `f64`, `f32` or integers.
pub fn read_label_npy(path: &Path) -> Result<LabelTable, SurveyError> {
    let npy_error = |message: String| SurveyError::Npy {
        path: path.into(),
        message,
    };
    let open = || {
        File::open(path).map_err(|source| SurveyError::Io {
            path: path.into(),
            source,
        })
    };

    let mut arrays: Vec<(String, ArrayD<f64>)> = Vec::new();
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npz"))
    {
        let mut npz = NpzReader::new(open()?).map_err(|e| npy_error(e.to_string()))?;
        let members = npz.names().map_err(|e| npy_error(e.to_string()))?;
        for member in members {
            let array = read_npz_member(&mut npz, &member).map_err(npy_error)?;
            arrays.push((member.trim_end_matches(".npy").to_string(), array));
        }
    } else {
        let array = read_npy_any(open()?).map_err(npy_error)?;
        arrays.push((fits::file_stem(path), array));
    }

    let n_rows = arrays
        .first()
        .map_or(0, |(_, a)| a.shape().first().copied().unwrap_or(0));
    let mut names = Vec::new();
    let mut columns = Vec::new();
    for (name, array) in arrays {
        let shape = array.shape().to_vec();
        if shape.is_empty() || shape.len() > 2 || shape[0] != n_rows {
            return Err(npy_error(format!(
                "array `{name}` has shape {shape:?}; every array must be 1-D or 2-D with {n_rows} rows"
            )));
        }
        let array = array
            .into_shape_with_order((n_rows, shape.get(1).copied().unwrap_or(1)))
            .expect("a 1-D or 2-D array reshapes to rows × columns");
        for (j, column) in array.columns().into_iter().enumerate() {
            names.push(if shape.len() == 1 {
                name.clone()
            } else {
                format!("{name}[{j}]")
            });
            columns.push(column.to_owned());
        }
    }

    let views: Vec<_> = columns.iter().map(|c| c.view()).collect();
    let values = if views.is_empty() {
        Array2::zeros((n_rows, 0))
    } else {
        ndarray::stack(Axis(1), &views).expect("every column has n_rows values")
    };
    Ok(LabelTable {
        source: path.into(),
        ids: (0..n_rows).map(|i| i.to_string()).collect(),
        names,
        values,
        skipped: Vec::new(),
    })
}

/// Reads an `.npy` stream of floats or integers as `f64`.
fn read_npy_any(file: File) -> Result<ArrayD<f64>, String> {
    let bytes = {
        use std::io::Read;
        let mut bytes = Vec::new();
        let mut file = file;
        file.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
        bytes
    };
    if let Ok(a) = ArrayD::<f64>::read_npy(bytes.as_slice()) {
        return Ok(a);
    }
    if let Ok(a) = ArrayD::<f32>::read_npy(bytes.as_slice()) {
        return Ok(a.mapv(f64::from));
    }
    if let Ok(a) = ArrayD::<i64>::read_npy(bytes.as_slice()) {
        return Ok(a.mapv(|v| v as f64));
    }
    ArrayD::<i32>::read_npy(bytes.as_slice())
        .map(|a| a.mapv(f64::from))
        .map_err(|e| format!("not an array of f64, f32, i64 or i32: {e}"))
}

/// Reads one member of an `.npz` archive of floats or integers as `f64`.
fn read_npz_member(npz: &mut NpzReader<File>, member: &str) -> Result<ArrayD<f64>, String> {
    if let Ok(a) = npz.by_name::<ndarray::OwnedRepr<f64>, ndarray::IxDyn>(member) {
        return Ok(a);
    }
    if let Ok(a) = npz.by_name::<ndarray::OwnedRepr<f32>, ndarray::IxDyn>(member) {
        return Ok(a.mapv(f64::from));
    }
    if let Ok(a) = npz.by_name::<ndarray::OwnedRepr<i64>, ndarray::IxDyn>(member) {
        return Ok(a.mapv(|v| v as f64));
    }
    npz.by_name::<ndarray::OwnedRepr<i32>, ndarray::IxDyn>(member)
        .map(|a| a.mapv(f64::from))
        .map_err(|e| format!("member `{member}` is not an array of f64, f32, i64 or i32: {e}"))
}

/// Reads the first binary table of a FITS file as a label table.
///
/// The ids come from `id_column`, or the first character column, or are the row
/// numbers when the table has none. Every numeric column with one value per row is a
/// label; vector columns are left out.
pub fn read_label_fits(path: &Path, id_column: Option<&str>) -> Result<LabelTable, SurveyError> {
    let table = fits::read_table(path)?;

    let id_name = match id_column {
        Some(name) => Some(table.column(name)?.name.clone()),
        None => table
            .columns
            .iter()
            .find(|c| matches!(c.data, ColumnData::Text(_)))
            .map(|c| c.name.clone()),
    };
    let ids = match &id_name {
        Some(name) => table.text(name)?,
        None => (0..table.n_rows).map(|i| i.to_string()).collect(),
    };

    let mut names = Vec::new();
    let mut columns = Vec::new();
    for column in &table.columns {
        if Some(&column.name) == id_name.as_ref() {
            continue;
        }
        match &column.data {
            ColumnData::Numeric(values) if values.ncols() == 1 => {
                names.push(column.name.clone());
                columns.push(values.column(0));
            }
            _ => {}
        }
    }
    let values = if columns.is_empty() {
        Array2::zeros((table.n_rows, 0))
    } else {
        ndarray::stack(Axis(1), &columns).expect("every column has n_rows values")
    };

    let labels = LabelTable {
        source: path.into(),
        ids,
        names,
        values,
        skipped: Vec::new(),
    };
    labels.check_unique()?;
    Ok(labels)
}

/// Reads `MILES_params.db`, the MILES stellar parameters as shipped by the MaNGA DAP.
///
/// The file is plain text: three comment lines starting with `#`, then one line per
/// star with four whitespace-separated fields, the MILES number (`0272`), Teff in K,
/// log g in dex (cgs) and [Fe/H] in dex. Missing values are coded 99999 for Teff and 9999
/// for log g and [Fe/H]; they become NaN. The ids are `m0272V`, the name the MILES
/// spectra files end with (`MILES_res2.50_star_m0272V.fits`); the columns are `teff`,
/// `logg` and `feh`. A row whose star number is not a number is left out and listed in
/// [`LabelTable::skipped`].
pub fn read_miles_params(path: &Path) -> Result<LabelTable, SurveyError> {
    let text = std::fs::read_to_string(path).map_err(|source| SurveyError::Io {
        path: path.into(),
        source,
    })?;

    let mut ids = Vec::new();
    let mut values = Vec::new();
    let mut skipped = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parse_error = |message: String| SurveyError::Parse {
            path: path.into(),
            line: i + 1,
            message,
        };

        let fields: Vec<&str> = line.split_whitespace().collect();
        let [number, teff, logg, feh] = fields[..] else {
            return Err(parse_error(format!(
                "expected 4 fields (MILES number, Teff, log g, [Fe/H]), found {}",
                fields.len()
            )));
        };
        // The file shipped with sdss-mangadap 4.5.0 has one such row (`022.`). Which
        // star it belongs to cannot be known, so the row is left out and reported.
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            skipped.push(format!("line {}: MILES number `{number}` is not a number", i + 1));
            continue;
        }
        ids.push(format!("m{number}V"));

        for (field, missing) in [
            (teff, MILES_MISSING_TEFF),
            (logg, MILES_MISSING_OTHER),
            (feh, MILES_MISSING_OTHER),
        ] {
            let value: f64 = field
                .parse()
                .map_err(|_| parse_error(format!("`{field}` is not a number")))?;
            values.push(if value == missing { f64::NAN } else { value });
        }
    }

    let values = Array2::from_shape_vec((ids.len(), 3), values).expect("three values per star");
    let table = LabelTable {
        source: path.into(),
        ids,
        names: vec!["teff".into(), "logg".into(), "feh".into()],
        values,
        skipped,
    };
    table.check_unique()?;
    Ok(table)
}

/// Returns the labels of each spectrum, row by row in the order of `spectra.ids`.
///
/// A spectrum matches the label row whose id equals its id, or, failing that, equals
/// the last `_`-separated part of its id, so `MILES_res2.50_star_m0272V` matches
/// `m0272V`. Spectra with no matching row get a row of NaN (labels missing); label rows
/// with no spectrum are dropped. The result keeps the label table's `source`.
pub fn join(spectra: &SpectraSet, labels: &LabelTable) -> Result<LabelTable, SurveyError> {
    labels.check_unique()?;
    let rows: HashMap<&str, usize> = labels
        .ids
        .iter()
        .enumerate()
        .map(|(row, id)| (id.as_str(), row))
        .collect();

    let mut values = Array2::from_elem((spectra.ids.len(), labels.names.len()), f64::NAN);
    for (i, id) in spectra.ids.iter().enumerate() {
        let suffix = id.rsplit('_').next().unwrap_or(id);
        if let Some(&row) = rows.get(id.as_str()).or_else(|| rows.get(suffix)) {
            values.row_mut(i).assign(&labels.values.row(row));
        }
    }

    Ok(LabelTable {
        source: labels.source.clone(),
        ids: spectra.ids.clone(),
        names: labels.names.clone(),
        values,
        skipped: labels.skipped.clone(),
    })
}
