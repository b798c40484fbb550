//! Reading spectra and labels named on the command line, and writing tables.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use lux::dsl::ndarray::Array2;
use lux::saved::write_atomic;
use lux::survey::{self, LabelTable, Spectrum};

use crate::error::CliError;
use crate::settings::SpectraArgs;

/// Lists the spectrum files: each file argument as given, each directory searched with the glob.
pub fn spectrum_paths(args: &SpectraArgs) -> Result<Vec<PathBuf>, CliError> {
    let mut paths = Vec::new();
    for path in &args.spectra {
        if path.is_dir() {
            paths.extend(survey::find_files(path, &args.glob)?);
        } else {
            paths.push(path.clone());
        }
    }
    Ok(paths)
}

/// Reads every spectrum, keeping the file it came from.
pub fn read_spectra(paths: &[PathBuf]) -> Result<Vec<(PathBuf, Spectrum)>, CliError> {
    paths.iter().map(|p| Ok((p.clone(), survey::read_spectrum(p)?))).collect()
}

/// Reads a label table with the reader its extension picks, using `id_column` for CSV
/// and FITS tables.
pub fn read_label_table(path: &Path, id_column: Option<&str>) -> Result<LabelTable, CliError> {
    let extension = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    let table = match (extension.as_str(), id_column) {
        ("csv", Some(id)) => survey::read_label_csv(path, Some(id))?,
        ("fits" | "fit" | "fts", Some(id)) => survey::read_label_fits(path, Some(id))?,
        _ => survey::read_labels(path)?,
    };
    Ok(table)
}

/// Resolves the requested names against the table's column names, ignoring case. An
/// unknown name is an error naming the file and the columns present.
pub fn resolve_columns(table: &LabelTable, requested: &[String]) -> Result<Vec<String>, CliError> {
    requested
        .iter()
        .map(|name| match table.names.iter().find(|n| n.eq_ignore_ascii_case(name)) {
            Some(found) => Ok(found.clone()),
            None => Ok(table.names[table.index_of(name)?].clone()),
        })
        .collect()
}

/// Writes a CSV table atomically: a header and one row per id, values in the shortest
/// form that reads back exactly, NaN as an empty cell.
pub fn write_csv(path: &Path, header: &[String], ids: &[String], columns: &[Vec<String>]) -> Result<(), CliError> {
    write_atomic(path, csv_text(header, ids, columns).as_bytes())?;
    Ok(())
}

/// Formats the CSV text that [`write_csv`] writes.
pub fn csv_text(header: &[String], ids: &[String], columns: &[Vec<String>]) -> String {
    let mut text = header.join(",");
    text.push('\n');
    for (i, id) in ids.iter().enumerate() {
        text.push_str(id);
        for column in columns {
            let _ = write!(text, ",{}", column[i]);
        }
        text.push('\n');
    }
    text
}

/// Formats a value for a CSV cell.
pub fn cell(x: f64) -> String {
    if x.is_finite() { format!("{x}") } else { String::new() }
}

/// Builds the label columns of a prediction table: per label, the value and its uncertainty.
pub fn prediction_columns(names: &[String], values: &Array2<f64>, errors: &Array2<f64>) -> (Vec<String>, Vec<Vec<String>>) {
    let mut header = Vec::new();
    let mut columns = Vec::new();
    for (l, name) in names.iter().enumerate() {
        header.push(name.clone());
        header.push(format!("{name}_err"));
        columns.push(values.column(l).iter().map(|&v| cell(v)).collect());
        columns.push(errors.column(l).iter().map(|&v| cell(v)).collect());
    }
    (header, columns)
}

/// Unit of a label, by its usual name.
pub fn unit(name: &str) -> &'static str {
    match name.to_ascii_lowercase().as_str() {
        "teff" => "K",
        "logg" | "feh" | "mh" | "alpha_fe" | "afe" => "dex",
        _ => "",
    }
}
