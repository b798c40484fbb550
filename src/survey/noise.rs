//! Assumed errors for data that ship without them (MILES has no per-pixel errors).

use ndarray::Array2;

use super::normalize::median_positive;
use super::{LabelTable, SurveyError};

/// Default floor of [`flux_errors`], as a fraction of each spectrum's median positive flux.
pub const DEFAULT_ERROR_FLOOR: f64 = 0.1;

/// Per-pixel 1-sigma flux errors from an assumed signal-to-noise ratio per pixel:
///
/// `σ_ij = max(|f_ij|, floor · m_i) / snr`,
///
/// where `m_i` is the median positive flux of spectrum `i`. The floor keeps pixels near
/// zero (deep line cores, bad pixels) from getting a near-zero error and so an
/// enormous weight. Missing pixels (NaN flux), and every pixel of a spectrum with no
/// positive flux, get an infinite error, which the likelihood masks.
pub fn flux_errors(flux: &Array2<f64>, snr: f64, floor: f64) -> Result<Array2<f64>, SurveyError> {
    if !(snr > 0.0 && snr.is_finite()) {
        return Err(SurveyError::InvalidSetting {
            name: "signal-to-noise ratio",
            value: snr,
            reason: "must be positive and finite",
        });
    }
    if !(floor >= 0.0 && floor.is_finite()) {
        return Err(SurveyError::InvalidSetting {
            name: "error floor",
            value: floor,
            reason: "must be a finite fraction >= 0 of the median flux",
        });
    }

    let mut errors = Array2::from_elem(flux.raw_dim(), f64::INFINITY);
    for (i, spectrum) in flux.rows().into_iter().enumerate() {
        let Some(median) = median_positive(spectrum) else {
            continue;
        };
        let minimum = floor * median;
        for (j, &f) in spectrum.iter().enumerate() {
            if f.is_finite() {
                errors[[i, j]] = f.abs().max(minimum) / snr;
            }
        }
    }
    Ok(errors)
}

/// An assumed 1-sigma error of one label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AssumedError {
    /// A fraction of the value's magnitude (0.02 is 2%).
    Fraction(f64),
    /// The same error for every star, in the label's unit.
    Absolute(f64),
}

/// Assumed label errors by column name (names matched ignoring case).
#[derive(Debug, Clone, PartialEq)]
pub struct LabelErrors {
    /// `(column name, error)` pairs.
    pub rules: Vec<(String, AssumedError)>,
}

impl Default for LabelErrors {
    /// 2% in `teff`, 0.2 dex in `logg`, 0.1 dex in `feh`: the names
    /// [`read_miles_params`](super::read_miles_params) gives.
    fn default() -> Self {
        Self {
            rules: vec![
                ("teff".into(), AssumedError::Fraction(0.02)),
                ("logg".into(), AssumedError::Absolute(0.2)),
                ("feh".into(), AssumedError::Absolute(0.1)),
            ],
        }
    }
}

/// Per-star 1-sigma label errors for every column of `labels`, by the rule of the same
/// name. Missing labels (NaN) get an infinite error. A column without a rule is an error
/// naming it.
pub fn label_errors(
    labels: &LabelTable,
    assumed: &LabelErrors,
) -> Result<Array2<f64>, SurveyError> {
    let mut errors = Array2::from_elem(labels.values.raw_dim(), f64::INFINITY);
    for (j, name) in labels.names.iter().enumerate() {
        let rule = assumed
            .rules
            .iter()
            .find(|(rule_name, _)| rule_name.eq_ignore_ascii_case(name))
            .map(|(_, rule)| *rule)
            .ok_or_else(|| SurveyError::NoAssumedError {
                column: name.clone(),
                present: assumed.rules.iter().map(|(n, _)| n.clone()).collect(),
            })?;

        for (i, &value) in labels.values.column(j).iter().enumerate() {
            if value.is_finite() {
                errors[[i, j]] = match rule {
                    AssumedError::Fraction(f) => f * value.abs(),
                    AssumedError::Absolute(e) => e,
                };
            }
        }
    }
    Ok(errors)
}
