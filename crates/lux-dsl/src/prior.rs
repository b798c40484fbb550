//! Priors on latents and global parameters.

use std::f64::consts::LN_2;

use crate::error::GraphError;

const HALF_LN_2PI: f64 = 0.918_938_533_204_672_7;

/// A prior applied independently to every element of a latent or parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Prior {
    /// The improper uniform prior: contributes nothing to the loss.
    Flat,
    /// `Normal(mean, scale)` on each element.
    Normal { mean: f64, scale: f64 },
    /// `HalfNormal(scale)`: a Normal(0, scale) folded onto x ≥ 0, for scales and scatters.
    HalfNormal { scale: f64 },
}

impl Prior {
    /// `Normal(mean, scale)`.
    pub fn normal(mean: f64, scale: f64) -> Self {
        Prior::Normal { mean, scale }
    }

    /// `Normal(0, 1)`, the default for latents and linear maps.
    pub fn standard_normal() -> Self {
        Prior::Normal {
            mean: 0.0,
            scale: 1.0,
        }
    }

    /// `HalfNormal(scale)`.
    pub fn half_normal(scale: f64) -> Self {
        Prior::HalfNormal { scale }
    }

    pub(crate) fn validate(&self, name: &str) -> Result<(), GraphError> {
        let bad = |reason: String| {
            Err(GraphError::InvalidPrior {
                name: name.to_string(),
                reason,
            })
        };
        match *self {
            Prior::Flat => Ok(()),
            Prior::Normal { mean, scale } => {
                if !mean.is_finite() {
                    return bad(format!("the mean is {mean}; give a finite mean"));
                }
                if !(scale.is_finite() && scale > 0.0) {
                    return bad(format!("the scale is {scale}; give a finite scale > 0"));
                }
                Ok(())
            }
            Prior::HalfNormal { scale } => {
                if !(scale.is_finite() && scale > 0.0) {
                    return bad(format!("the scale is {scale}; give a finite scale > 0"));
                }
                Ok(())
            }
        }
    }

    /// Whether values must be non-negative (a HalfNormal prior).
    pub fn is_positive(&self) -> bool {
        matches!(self, Prior::HalfNormal { .. })
    }

    /// Mean and precision 1/scale² of a Gaussian prior; `(0, 0)` for a flat prior and
    /// `None` for a prior that is not Gaussian.
    pub fn gaussian(&self) -> Option<(f64, f64)> {
        match *self {
            Prior::Flat => Some((0.0, 0.0)),
            Prior::Normal { mean, scale } => Some((mean, 1.0 / (scale * scale))),
            Prior::HalfNormal { .. } => None,
        }
    }

    /// Negative log density of one element, every normalizing constant included
    /// (0 for a flat prior, +∞ below zero for a HalfNormal prior).
    pub fn neg_log_density(&self, x: f64) -> f64 {
        match *self {
            Prior::Flat => 0.0,
            Prior::Normal { mean, scale } => {
                let u = (x - mean) / scale;
                0.5 * u * u + scale.ln() + HALF_LN_2PI
            }
            Prior::HalfNormal { scale } => {
                if x < 0.0 {
                    return f64::INFINITY;
                }
                let u = x / scale;
                0.5 * u * u + scale.ln() + HALF_LN_2PI - LN_2
            }
        }
    }

    /// Derivative of [`Prior::neg_log_density`] with respect to the element.
    pub fn neg_log_density_grad(&self, x: f64) -> f64 {
        match *self {
            Prior::Flat => 0.0,
            Prior::Normal { mean, scale } => (x - mean) / (scale * scale),
            Prior::HalfNormal { scale } => x / (scale * scale),
        }
    }

    /// Negative log density summed over `values`.
    pub fn neg_log_density_sum(&self, values: impl IntoIterator<Item = f64>) -> f64 {
        match *self {
            Prior::Flat => 0.0,
            _ => values.into_iter().map(|x| self.neg_log_density(x)).sum(),
        }
    }
}

/// ½·ln(2π), the per-element constant of a Gaussian negative log density.
pub const fn half_ln_2pi() -> f64 {
    HALF_LN_2PI
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    #[test]
    fn half_ln_2pi_constant() {
        assert!((half_ln_2pi() - 0.5 * (2.0 * PI).ln()).abs() < 1e-15);
    }

    #[test]
    fn normal_density_matches_closed_form() {
        let prior = Prior::normal(1.0, 2.0);
        let x: f64 = 0.3;
        let expected = -(-(x - 1.0).powi(2) / 8.0 - (2.0 * (2.0 * PI).sqrt()).ln());
        assert!((prior.neg_log_density(x) - expected).abs() < 1e-14);
    }

    #[test]
    fn half_normal_is_twice_the_normal() {
        let half = Prior::half_normal(0.5);
        let full = Prior::normal(0.0, 0.5);
        let x = 0.7;
        assert!((half.neg_log_density(x) - (full.neg_log_density(x) - LN_2)).abs() < 1e-14);
        assert!(half.neg_log_density(-0.1).is_infinite());
    }

    #[test]
    fn invalid_scale_is_rejected() {
        assert!(Prior::normal(0.0, 0.0).validate("A").is_err());
        assert!(Prior::half_normal(f64::NAN).validate("s").is_err());
    }
}
