//! The error type of survey input.

use std::fmt;
use std::path::PathBuf;

/// Failure to read a survey file, or to run an operation on spectra or labels.
///
/// Every variant that comes from a file names it, so a message in a log names the one
/// file at fault among hundreds.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SurveyError {
    /// The file could not be opened or read.
    #[error("{}: cannot read the file: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file does not start with the `SIMPLE` card every FITS file starts with.
    #[error("{}: not a FITS file (it does not start with `SIMPLE  =`); remove it from the spectra, or narrow the file pattern", path.display())]
    NotFits { path: PathBuf },

    /// The file ends before the header or data its header announces.
    #[error("{}: truncated FITS file: {what}; fetch the file again", path.display())]
    Truncated { path: PathBuf, what: String },

    /// The FITS reader rejected the header or data.
    #[error("{}: malformed FITS file: {message}", path.display())]
    Fits { path: PathBuf, message: String },

    /// A 1-D spectrum was expected, and the image has more than one non-trivial axis.
    #[error(
        "{}: image has axes {shape:?}; a spectrum must be a 1-D image (axes of length 1 are allowed)",
        path.display()
    )]
    NotOneDimensional { path: PathBuf, shape: Vec<u64> },

    /// No HDU of the file contains an image.
    #[error("{}: no HDU contains image data; a spectrum must be a 1-D image", path.display())]
    NoImage { path: PathBuf },

    /// No HDU of the file is a binary table.
    #[error("{}: no binary table (BINTABLE) HDU in the file", path.display())]
    NoTable { path: PathBuf },

    /// The spectrum's header lacks a keyword of the linear wavelength solution.
    #[error(
        "{}: no wavelength WCS: {missing} is missing; a 1-D spectrum needs CRVAL1 and CDELT1 (or CD1_1)",
        path.display()
    )]
    NoWcs {
        path: PathBuf,
        missing: &'static str,
    },

    /// The wavelength axis is not linear in wavelength, or has a unit lux does not convert.
    #[error("{}: unsupported wavelength axis: {detail}", path.display())]
    UnsupportedWcs { path: PathBuf, detail: String },

    /// The requested column is not in the table.
    #[error(
        "{}: no column `{column}`; the columns present are: {}",
        path.display(),
        List(present)
    )]
    UnknownColumn {
        path: PathBuf,
        column: String,
        present: Vec<String>,
    },

    /// The column exists but is of the wrong kind (text where numbers are needed).
    #[error("{}: column `{column}` {problem}", path.display())]
    BadColumn {
        path: PathBuf,
        column: String,
        problem: String,
    },

    /// A line of a text table could not be parsed.
    #[error("{}, line {line}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },

    /// An `.npy` or `.npz` file could not be read as a numeric table.
    #[error("{}: {message}", path.display())]
    Npy { path: PathBuf, message: String },

    /// Two rows of a label table carry the same id, so a join would be ambiguous.
    #[error("{}: id `{id}` appears in rows {first} and {second}; ids must be unique", path.display())]
    DuplicateId {
        path: PathBuf,
        id: String,
        first: usize,
        second: usize,
    },

    /// A directory scan found no file.
    #[error("no file in {} matches `{pattern}`", dir.display())]
    NoFiles { dir: PathBuf, pattern: String },

    /// A glob pattern does not parse.
    #[error("invalid file pattern `{pattern}`: {message}")]
    Pattern { pattern: String, message: String },

    /// The wavelength ranges of the spectra have no common part to resample onto.
    #[error(
        "spectra do not overlap in wavelength: `{id}` covers {lo:.3}..{hi:.3} Å, outside the range \
         common to the spectra before it; load such spectra separately"
    )]
    NoOverlap { id: String, lo: f64, hi: f64 },

    /// A wavelength window keeps no pixel.
    #[error("wavelength window {lo}..{hi} Å keeps no pixel of the grid {start:.3}..{end:.3} Å")]
    EmptyWindow {
        lo: f64,
        hi: f64,
        start: f64,
        end: f64,
    },

    /// A numerical setting is out of its range.
    #[error("invalid {name} = {value}: {reason}")]
    InvalidSetting {
        name: &'static str,
        value: f64,
        reason: &'static str,
    },

    /// A label column has no rule for its assumed error.
    #[error(
        "no assumed error for label `{column}`; rules are given for: {}; add one for `{column}`",
        List(present)
    )]
    NoAssumedError {
        column: String,
        present: Vec<String>,
    },
}

/// Displays names as `a, b, c`.
struct List<'a>(&'a [String]);

impl fmt::Display for List<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(none)");
        }
        f.write_str(&self.0.join(", "))
    }
}
