//! The error of a `lux` run: what failed, naming the file or option at fault.

use std::path::PathBuf;

use lux::plot::PlotError;
use lux::saved::SavedError;
use lux::survey::SurveyError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Survey(#[from] SurveyError),

    #[error(transparent)]
    Saved(#[from] SavedError),

    #[error(transparent)]
    Plot(#[from] PlotError),

    #[error(transparent)]
    Data(#[from] lux::dsl::DataError),

    #[error(transparent)]
    Fit(#[from] lux::infer::FitError),

    #[error(transparent)]
    Graph(#[from] lux::dsl::GraphError),

    /// A spectrum is not on the model's input grid and --resample was not given.
    #[error(
        "{}: wavelength grid differs from the model's: the file has {found} pixels from {found_lo:.3} to \
         {found_hi:.3} Å, the model was trained on {expected} pixels from {expected_lo:.3} to {expected_hi:.3} Å; \
         pass --resample to interpolate it onto the model's grid",
        path.display()
    )]
    Grid {
        path: PathBuf,
        found: usize,
        found_lo: f64,
        found_hi: f64,
        expected: usize,
        expected_lo: f64,
        expected_hi: f64,
    },

    /// An option value that does not parse or does not fit the data.
    #[error("invalid {option} `{value}`: {reason}")]
    Option {
        option: &'static str,
        value: String,
        reason: String,
    },

    /// A fit failed at one star, named here because the engine reports only its row.
    #[error(
        "{stage} failed at star `{id}`; if its spectrum has pixels near zero flux, raise --error-floor or \
         --bin, or mask them"
    )]
    Star {
        stage: &'static str,
        id: String,
        #[source]
        source: lux::infer::FitError,
    },

    /// A fit failed at one flux pixel.
    #[error(
        "{stage} failed at the flux pixel at {wavelength:.2} Å; if some spectra have flux near zero \
         there, raise --error-floor or --bin, or leave the pixel out with --window"
    )]
    Pixel {
        stage: &'static str,
        wavelength: f64,
        #[source]
        source: lux::infer::FitError,
    },

    /// Too few labelled stars for the requested validation.
    #[error("{}: {found} spectra have labels, {needed} are needed for {what}", labels.display())]
    TooFewStars {
        labels: PathBuf,
        found: usize,
        needed: usize,
        what: String,
    },

    /// A file or directory could not be created or read.
    #[error("{}: {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// `lux info` does not know the file type.
    #[error("{}: unknown file type{}; `lux info` reads .json models, .fits, .npy, .npz, .csv and .db files", path.display(), if path.is_dir() { " (it is a directory: name one file in it)" } else { "" })]
    UnknownFileType { path: PathBuf },
}
