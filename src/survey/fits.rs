//! FITS input: 1-D spectra with a linear wavelength solution, and binary tables.
//!
//! The pure-Rust `fitsrs` crate parses headers and data. This module adds what spectra
//! need: the wavelength of every pixel from the header, `BSCALE`/`BZERO`, `BLANK`,
//! `TSCALn`/`TZEROn`/`TNULLn`, and errors that name the file.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use fitsrs::card::Value;
use fitsrs::hdu::header::Header;
use fitsrs::{DataValue, Fits, HDU, Pixels};
use ndarray::{Array1, Array2};

use super::SurveyError;

/// FITS files are made of blocks of this many bytes.
const BLOCK: usize = 2880;

/// One spectrum read from a FITS image.
#[derive(Debug, Clone, PartialEq)]
pub struct Spectrum {
    /// The file stem (`MILES_res2.50_star_m0001V` for `MILES_res2.50_star_m0001V.fits`).
    pub id: String,
    /// Wavelength of every pixel in Å, from the header's linear WCS.
    pub wavelength: Array1<f64>,
    /// Flux of every pixel, `BZERO + BSCALE * stored`; `BLANK` pixels are NaN.
    pub flux: Array1<f64>,
}

/// Reads a 1-D spectrum from the first HDU that contains an image.
///
/// The wavelength of pixel `i` (0-based) is
/// `CRVAL1 + CDELT1 * (i + 1 - CRPIX1)`, with `CD1_1` in place of `CDELT1` when
/// `CDELT1` is absent and `CRPIX1 = 1` when absent. `CUNIT1` may be Å (the default), nm,
/// µm or m; wavelengths are returned in Å. `CTYPE1`, when present, must name a linear
/// wavelength axis (`WAVE`, `AWAV`, `LAMBDA` or `LINEAR`); a log-linear axis
/// (`WAVE-LOG`, or IRAF's `DC-FLAG = 1`) is an error rather than a silently wrong grid.
/// Axes of length 1 beyond the first are allowed (`NAXIS2 = 1`).
///
/// BITPIX 8, 16, 32, 64, -32 and -64 are read.
pub fn read_spectrum(path: &Path) -> Result<Spectrum, SurveyError> {
    let bytes = read_fits_bytes(path)?;
    let mut cursor = Cursor::new(bytes.as_slice());
    let mut hdus = Fits::from_reader(&mut cursor);

    while let Some(hdu) = hdus.next() {
        let hdu = hdu.map_err(|e| fits_error(path, e))?;
        let image = match hdu {
            HDU::Primary(image) | HDU::XImage(image) => image,
            _ => continue,
        };

        let header = image.get_header();
        let shape = header.get_xtension().get_naxis().to_vec();
        if shape.is_empty() || shape.contains(&0) {
            continue;
        }
        if shape[1..].iter().any(|&n| n != 1) {
            return Err(SurveyError::NotOneDimensional {
                path: path.into(),
                shape,
            });
        }
        let n_pixels = shape[0] as usize;

        let end = image.get_data_unit_byte_offset() + image.get_data_unit_byte_size();
        check_length(path, &bytes, end, "image data")?;

        let wavelength = linear_wavelength(path, header, n_pixels)?;
        let scaling = Scaling::from_header(header, "BSCALE", "BZERO", "BLANK");
        let raw = hdus.get_data(&image).pixels();
        let flux = scaling.apply_pixels(raw);
        if flux.len() != n_pixels {
            return Err(SurveyError::Truncated {
                path: path.into(),
                what: format!("read {} of {n_pixels} pixels", flux.len()),
            });
        }

        return Ok(Spectrum {
            id: file_stem(path),
            wavelength,
            flux: Array1::from(flux),
        });
    }
    Err(SurveyError::NoImage { path: path.into() })
}

/// Computes the wavelength grid of a linear WCS in Å, with the checks listed at
/// [`read_spectrum`].
fn linear_wavelength<X>(
    path: &Path,
    header: &Header<X>,
    n_pixels: usize,
) -> Result<Array1<f64>, SurveyError> {
    if let Some(ctype) = string_card(header, "CTYPE1") {
        let axis = ctype.trim().to_ascii_uppercase();
        if !matches!(axis.as_str(), "" | "WAVE" | "AWAV" | "LAMBDA" | "LINEAR") {
            return Err(SurveyError::UnsupportedWcs {
                path: path.into(),
                detail: format!("CTYPE1 = '{ctype}'; only linear wavelength axes are read"),
            });
        }
    }
    if number_card(header, "DC-FLAG") == Some(1.0) {
        return Err(SurveyError::UnsupportedWcs {
            path: path.into(),
            detail: "DC-FLAG = 1 marks a log-linear axis; only linear axes are read".into(),
        });
    }

    let unit = match string_card(header, "CUNIT1") {
        None => 1.0,
        Some(unit) => angstrom_per(&unit).ok_or_else(|| SurveyError::UnsupportedWcs {
            path: path.into(),
            detail: format!("CUNIT1 = '{unit}'; expected Angstrom, nm, um or m"),
        })?,
    };

    let start = number_card(header, "CRVAL1").ok_or(SurveyError::NoWcs {
        path: path.into(),
        missing: "CRVAL1",
    })?;
    let step = number_card(header, "CDELT1")
        .or_else(|| number_card(header, "CD1_1"))
        .ok_or(SurveyError::NoWcs {
            path: path.into(),
            missing: "CDELT1 (or CD1_1)",
        })?;
    let reference = number_card(header, "CRPIX1").unwrap_or(1.0);

    Ok(Array1::from_shape_fn(n_pixels, |i| {
        unit * (start + step * (i as f64 + 1.0 - reference))
    }))
}

/// Å per unit of a `CUNIT1` value, `None` for units that are not lengths.
fn angstrom_per(unit: &str) -> Option<f64> {
    match unit.trim().to_ascii_lowercase().as_str() {
        "angstrom" | "angstroms" | "a" | "aa" => Some(1.0),
        "nm" => Some(10.0),
        "um" | "micron" | "microns" => Some(1e4),
        "m" => Some(1e10),
        _ => None,
    }
}

/// One column of a binary table.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnData {
    /// A numeric column, one row per table row and one column per repeat
    /// (`TFORMn = '4300E'` gives 4300 columns). Scaled by `TSCALn`/`TZEROn`; `TNULLn`
    /// values are NaN. Logical columns are 0 and 1.
    Numeric(Array2<f64>),
    /// A character column (`TFORMn = 'rA'`), trailing blanks removed.
    Text(Vec<String>),
}

/// A named column of a binary table.
#[derive(Debug, Clone, PartialEq)]
pub struct TableColumn {
    /// `TTYPEn`, or `COLn` when the header has none.
    pub name: String,
    /// The values.
    pub data: ColumnData,
}

/// The numeric and character columns of a FITS binary table.
///
/// Columns of other kinds (bits, complex numbers, variable-length arrays) are not read.
#[derive(Debug, Clone, PartialEq)]
pub struct FitsTable {
    /// The file it was read from.
    pub path: PathBuf,
    /// Number of rows (`NAXIS2`).
    pub n_rows: usize,
    /// The columns, in header order.
    pub columns: Vec<TableColumn>,
}

impl FitsTable {
    /// Names of the columns, in header order.
    pub fn names(&self) -> Vec<String> {
        self.columns.iter().map(|c| c.name.clone()).collect()
    }

    /// Returns the column named `name`, matched ignoring case as FITS does for `TTYPEn`.
    pub fn column(&self, name: &str) -> Result<&TableColumn, SurveyError> {
        self.columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| SurveyError::UnknownColumn {
                path: self.path.clone(),
                column: name.into(),
                present: self.names(),
            })
    }

    /// Returns the numeric column named `name`, rows × repeat.
    pub fn numeric(&self, name: &str) -> Result<&Array2<f64>, SurveyError> {
        match &self.column(name)?.data {
            ColumnData::Numeric(values) => Ok(values),
            ColumnData::Text(_) => Err(SurveyError::BadColumn {
                path: self.path.clone(),
                column: name.into(),
                problem: "contains text; a numeric column is needed".into(),
            }),
        }
    }

    /// Returns the character column named `name`. A numeric column with one value per row
    /// is formatted as text, so integer ids work too.
    pub fn text(&self, name: &str) -> Result<Vec<String>, SurveyError> {
        match &self.column(name)?.data {
            ColumnData::Text(values) => Ok(values.clone()),
            ColumnData::Numeric(values) if values.ncols() == 1 => {
                Ok(values.column(0).iter().map(|v| v.to_string()).collect())
            }
            ColumnData::Numeric(_) => Err(SurveyError::BadColumn {
                path: self.path.clone(),
                column: name.into(),
                problem: "is a vector column; an id column needs one value per row".into(),
            }),
        }
    }
}

/// Reads the first binary table HDU of a FITS file.
pub fn read_table(path: &Path) -> Result<FitsTable, SurveyError> {
    let bytes = read_fits_bytes(path)?;
    let mut cursor = Cursor::new(bytes.as_slice());
    let mut hdus = Fits::from_reader(&mut cursor);

    while let Some(hdu) = hdus.next() {
        let hdu = hdu.map_err(|e| fits_error(path, e))?;
        let HDU::XBinaryTable(table) = hdu else {
            continue;
        };

        let end = table.get_data_unit_byte_offset() + table.get_data_unit_byte_size();
        check_length(path, &bytes, end, "table data")?;

        let header = table.get_header();
        let n_rows = header.get_xtension().get_num_rows();
        let n_fields = header.get_xtension().get_num_cols();
        let mut fields: Vec<Field> = (1..=n_fields).map(|n| Field::new(header, n)).collect();

        let mut rows_read = 0;
        for row in hdus.get_data(&table).row_iter() {
            for value in row.iter() {
                push_value(&mut fields, value);
            }
            rows_read += 1;
        }
        if rows_read != n_rows {
            return Err(SurveyError::Truncated {
                path: path.into(),
                what: format!("read {rows_read} of {n_rows} table rows"),
            });
        }

        let columns = fields
            .into_iter()
            .filter_map(|field| field.finish(n_rows))
            .collect();
        return Ok(FitsTable {
            path: path.into(),
            n_rows,
            columns,
        });
    }
    Err(SurveyError::NoTable { path: path.into() })
}

/// A binary table column being filled row by row.
struct Field {
    name: String,
    kind: u8,
    repeat: usize,
    scaling: Scaling,
    numbers: Vec<f64>,
    text: Vec<String>,
    current: String,
}

impl Field {
    fn new<X>(header: &Header<X>, n: usize) -> Self {
        let name = string_card(header, &format!("TTYPE{n}"))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("COL{n}"));
        let form = string_card(header, &format!("TFORM{n}")).unwrap_or_default();
        let form = form.trim();
        let digits = form.chars().take_while(|c| c.is_ascii_digit()).count();
        let repeat = form[..digits].parse().unwrap_or(1);
        let kind = form.as_bytes().get(digits).copied().unwrap_or(b'?');
        let scaling = Scaling::from_header(
            header,
            &format!("TSCAL{n}"),
            &format!("TZERO{n}"),
            &format!("TNULL{n}"),
        );
        Self {
            name,
            kind,
            repeat,
            scaling,
            numbers: Vec::new(),
            text: Vec::new(),
            current: String::new(),
        }
    }

    /// Returns the finished column, or `None` for kinds that are not read.
    fn finish(self, n_rows: usize) -> Option<TableColumn> {
        let data = match self.kind {
            b'A' => ColumnData::Text(self.text),
            b'L' | b'B' | b'I' | b'J' | b'K' | b'E' | b'D' => {
                let values = Array2::from_shape_vec((n_rows, self.repeat), self.numbers).ok()?;
                ColumnData::Numeric(values)
            }
            _ => return None,
        };
        Some(TableColumn {
            name: self.name,
            data,
        })
    }
}

/// Adds one value read by `fitsrs` to its column.
fn push_value(fields: &mut [Field], value: &DataValue) {
    use fitsrs::hdu::data::bintable::ColumnId;

    let (column, idx, raw) = match value {
        DataValue::Logical { value, column, idx } => {
            (column, *idx, Raw::Float(*value as u8 as f64))
        }
        DataValue::UnsignedByte { value, column, idx } => (column, *idx, Raw::Int(*value as i64)),
        DataValue::Short { value, column, idx } => (column, *idx, Raw::Int(*value as i64)),
        DataValue::Integer { value, column, idx } => (column, *idx, Raw::Int(*value as i64)),
        DataValue::Long { value, column, idx } => (column, *idx, Raw::Int(*value)),
        DataValue::Float { value, column, idx } => (column, *idx, Raw::Float(*value as f64)),
        DataValue::Double { value, column, idx } => (column, *idx, Raw::Float(*value)),
        DataValue::Character { value, column, idx } => {
            let ColumnId::Index(c) = column else { return };
            let Some(field) = fields.get_mut(*c) else {
                return;
            };
            field.current.push(*value);
            if idx + 1 == field.repeat {
                let done = std::mem::take(&mut field.current);
                field
                    .text
                    .push(done.trim_end_matches([' ', '\0']).to_string());
            }
            return;
        }
        _ => return,
    };
    let ColumnId::Index(c) = column else { return };
    let Some(field) = fields.get_mut(*c) else {
        return;
    };
    debug_assert!(idx < field.repeat);
    field.numbers.push(field.scaling.apply(raw));
}

/// A stored value before scaling.
#[derive(Clone, Copy)]
enum Raw {
    Int(i64),
    Float(f64),
}

/// `physical = zero + scale * stored`, with integer `blank` values read as NaN.
#[derive(Debug, Clone, Copy)]
struct Scaling {
    scale: f64,
    zero: f64,
    blank: Option<i64>,
}

impl Scaling {
    fn from_header<X>(header: &Header<X>, scale: &str, zero: &str, blank: &str) -> Self {
        Self {
            scale: number_card(header, scale).unwrap_or(1.0),
            zero: number_card(header, zero).unwrap_or(0.0),
            blank: match header.get(blank) {
                Some(Value::Integer { value, .. }) => Some(*value),
                _ => None,
            },
        }
    }

    fn apply(&self, raw: Raw) -> f64 {
        let stored = match raw {
            Raw::Int(v) if Some(v) == self.blank => return f64::NAN,
            Raw::Int(v) => v as f64,
            Raw::Float(v) => v,
        };
        self.zero + self.scale * stored
    }

    fn apply_pixels<R: std::io::Read>(&self, pixels: Pixels<R>) -> Vec<f64> {
        match pixels {
            Pixels::U8(it) => it.map(|v| self.apply(Raw::Int(v as i64))).collect(),
            Pixels::I16(it) => it.map(|v| self.apply(Raw::Int(v as i64))).collect(),
            Pixels::I32(it) => it.map(|v| self.apply(Raw::Int(v as i64))).collect(),
            Pixels::I64(it) => it.map(|v| self.apply(Raw::Int(v))).collect(),
            Pixels::F32(it) => it.map(|v| self.apply(Raw::Float(v as f64))).collect(),
            Pixels::F64(it) => it.map(|v| self.apply(Raw::Float(v))).collect(),
        }
    }
}

/// Reads a numeric card as `f64` (integers included).
fn number_card<X>(header: &Header<X>, key: &str) -> Option<f64> {
    match header.get(key)? {
        Value::Integer { value, .. } => Some(*value as f64),
        Value::Float { value, .. } => Some(*value),
        _ => None,
    }
}

/// Reads a string card, with its quotes removed.
fn string_card<X>(header: &Header<X>, key: &str) -> Option<String> {
    match header.get(key)? {
        Value::String { value, .. } => Some(value.clone()),
        _ => None,
    }
}

/// Reads a whole file and checks that it starts like a FITS file.
fn read_fits_bytes(path: &Path) -> Result<Vec<u8>, SurveyError> {
    let bytes = std::fs::read(path).map_err(|source| SurveyError::Io {
        path: path.into(),
        source,
    })?;
    if !bytes.starts_with(b"SIMPLE  =") {
        return Err(SurveyError::NotFits { path: path.into() });
    }
    if bytes.len() < BLOCK {
        return Err(SurveyError::Truncated {
            path: path.into(),
            what: format!(
                "{} bytes, shorter than one 2880-byte header block",
                bytes.len()
            ),
        });
    }
    Ok(bytes)
}

/// Checks that the data unit ending at byte `end` is in the file.
fn check_length(path: &Path, bytes: &[u8], end: u64, what: &str) -> Result<(), SurveyError> {
    if (bytes.len() as u64) < end {
        return Err(SurveyError::Truncated {
            path: path.into(),
            what: format!(
                "{what} ends at byte {end}, the file has {} bytes",
                bytes.len()
            ),
        });
    }
    Ok(())
}

/// Maps a `fitsrs` error to one that names the file; an early end of file means truncation.
fn fits_error(path: &Path, error: fitsrs::error::Error) -> SurveyError {
    use fitsrs::error::Error;
    match error {
        Error::Io(std::io::ErrorKind::UnexpectedEof) | Error::StaticError("EOF reached") => {
            SurveyError::Truncated {
                path: path.into(),
                what: "the file ends inside a header".into(),
            }
        }
        other => SurveyError::Fits {
            path: path.into(),
            message: other.to_string(),
        },
    }
}

/// Returns the file name without its last extension: `a/b/star.fits` gives `star`.
pub(crate) fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default()
}
