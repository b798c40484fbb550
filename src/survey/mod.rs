//! Survey input: real spectra and labels, read into plain `ndarray` structures.
//!
//! - [`read_spectrum`], [`read_spectra`], [`read_spectra_dir`]: 1-D FITS spectra with a
//!   linear wavelength WCS, put on one grid as a [`SpectraSet`] (N × P flux, the
//!   wavelength of each pixel, one id per spectrum).
//! - [`read_table`], [`spectra_from_table`]: FITS binary tables, and spectra stored in them.
//! - [`read_labels`] and the readers it picks from: CSV, `.npy`/`.npz`, FITS tables and
//!   the MILES parameter file, as a [`LabelTable`]; [`join`] lines labels up with spectra
//!   by id.
//! - [`SpectraSet::window`], [`SpectraSet::bin`], [`SpectraSet::normalize`]: the usual
//!   preparation, in that order.
//! - [`flux_errors`], [`label_errors`]: assumed errors for data that ship without them.
//!
//! Missing values are NaN throughout (missing label codes, non-positive flux after
//! normalization), and infinite in assumed errors, as the likelihood of `lux::dsl`
//! expects.
//!
//! ```no_run
//! use std::path::Path;
//! use lux::survey::{self, Normalization};
//!
//! # fn main() -> Result<(), survey::SurveyError> {
//! let dir = Path::new("data/miles");
//! let spectra = survey::read_spectra_dir(dir, "MILES_res2.50_star_m*V.fits")?
//!     .bin(4)?
//!     .normalize(&Normalization::Median)?;
//! let labels = survey::read_miles_params(&dir.join("MILES_params.db"))?;
//! let labels = survey::join(&spectra, &labels)?;
//! let flux_err = survey::flux_errors(&spectra.flux, 100.0, survey::DEFAULT_ERROR_FLOOR)?;
//! let label_err = survey::label_errors(&labels, &survey::LabelErrors::default())?;
//! # Ok(())
//! # }
//! ```

mod error;
mod fits;
mod labels;
mod noise;
mod normalize;
mod spectra;

pub use error::SurveyError;
pub use fits::{ColumnData, FitsTable, Spectrum, TableColumn, read_spectrum, read_table};
pub use labels::{
    LabelTable, MILES_MISSING_OTHER, MILES_MISSING_TEFF, join, read_label_csv, read_label_fits,
    read_label_npy, read_labels, read_miles_params,
};
pub use noise::{AssumedError, DEFAULT_ERROR_FLOOR, LabelErrors, flux_errors, label_errors};
pub use normalize::{ContinuumFit, Normalization, median_positive, normalize_median};
pub use spectra::{
    SpectraSet, find_files, interpolate, read_spectra, read_spectra_dir, spectra_from_table,
};
