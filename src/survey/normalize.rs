//! Per-spectrum normalization: by the median of the positive pixels, or by a fitted
//! pseudo-continuum.
//!
//! In both, a pixel that is not finite or not positive is missing: its normalized flux
//! is NaN and it takes no part in the median or the fit.

use ndarray::{Array1, Array2, ArrayView1, Axis};

use super::{SpectraSet, SurveyError};

/// Scaling applied to each spectrum of a set.
#[derive(Debug, Clone, PartialEq)]
pub enum Normalization {
    /// Flux kept as read (non-positive pixels still become NaN).
    None,
    /// Divided by the median of the spectrum's positive pixels.
    Median,
    /// Divided by a fitted pseudo-continuum.
    Continuum(ContinuumFit),
}

impl SpectraSet {
    /// Normalizes every spectrum. A spectrum with no usable pixel, or too few for the
    /// continuum fit, becomes a row of NaN (all pixels missing).
    pub fn normalize(&self, how: &Normalization) -> Result<SpectraSet, SurveyError> {
        if let Normalization::Continuum(fit) = how {
            fit.check()?;
        }

        let mut flux = Array2::from_elem(self.flux.raw_dim(), f64::NAN);
        for (i, mut row) in flux.axis_iter_mut(Axis(0)).enumerate() {
            let spectrum = self.flux.row(i);
            let normalized = match how {
                Normalization::None => Some(spectrum.mapv(usable)),
                Normalization::Median => normalize_median(spectrum),
                Normalization::Continuum(fit) => fit.normalize(self.wavelength.view(), spectrum),
            };
            if let Some(normalized) = normalized {
                row.assign(&normalized);
            }
        }

        Ok(SpectraSet {
            ids: self.ids.clone(),
            wavelength: self.wavelength.clone(),
            flux,
            resampled: self.resampled.clone(),
        })
    }
}

/// Returns the median of the finite, positive values, or `None` if there are none.
pub fn median_positive(flux: ArrayView1<f64>) -> Option<f64> {
    let mut positive: Vec<f64> = flux
        .iter()
        .copied()
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    if positive.is_empty() {
        return None;
    }
    positive.sort_by(f64::total_cmp);
    let n = positive.len();
    Some(if n % 2 == 1 {
        positive[n / 2]
    } else {
        0.5 * (positive[n / 2 - 1] + positive[n / 2])
    })
}

/// `flux / median_positive(flux)`, missing pixels NaN; `None` if no pixel is positive.
pub fn normalize_median(flux: ArrayView1<f64>) -> Option<Array1<f64>> {
    let median = median_positive(flux)?;
    Some(flux.mapv(|v| usable(v) / median))
}

/// A pseudo-continuum: a Legendre polynomial in wavelength fitted by least squares with
/// iterative asymmetric sigma clipping.
///
/// Each iteration fits the kept pixels, computes the rms `σ` of their residuals
/// `r = f - c`, and keeps the usable pixels with `-low_sigma σ <= r <= high_sigma σ`; it
/// stops when the kept set no longer changes or after `max_iter` fits. Clipping harder
/// below than above removes absorption lines, so the fit settles on the upper envelope
/// where the continuum of a stellar spectrum is. With Gaussian noise of rms `σ_n` and
/// the default 2σ/3σ clipping, the fit sits about `0.05 σ_n` above the true continuum,
/// an estimate from the mean of a normal distribution truncated at -2σ and +3σ. The wavelength is mapped to [-1, 1] over
/// the grid, so the fit is well conditioned at any degree used in practice.
///
/// Like every pseudo-continuum, this is not the physical continuum where lines blanket
/// the whole window (cool M stars, the blue end of cool giants): there it is a smooth
/// upper envelope, the same for all stars, which is what a data-driven model needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ContinuumFit {
    /// Polynomial degree (default 5). NOTE: the default is a judgement for the full
    /// MILES range of about 3900 Å, not tuned on MILES; the tests fit degree 3 over 650 Å.
    pub degree: usize,
    /// Pixels more than this many σ below the fit are dropped (default 2).
    pub low_sigma: f64,
    /// Pixels more than this many σ above the fit are dropped (default 3).
    pub high_sigma: f64,
    /// Maximum number of fits (default 20).
    pub max_iter: usize,
}

impl Default for ContinuumFit {
    fn default() -> Self {
        Self {
            degree: 5,
            low_sigma: 2.0,
            high_sigma: 3.0,
            max_iter: 20,
        }
    }
}

impl ContinuumFit {
    /// Returns the fitted continuum at every pixel, or `None` when fewer than
    /// `degree + 1` usable pixels remain.
    pub fn continuum(
        &self,
        wavelength: ArrayView1<f64>,
        flux: ArrayView1<f64>,
    ) -> Option<Array1<f64>> {
        assert_eq!(
            wavelength.len(),
            flux.len(),
            "one wavelength per flux pixel"
        );
        let n_terms = self.degree + 1;
        let usable_pixels: Vec<bool> = flux.iter().map(|v| v.is_finite() && *v > 0.0).collect();

        let (lo, hi) = (wavelength.first()?, wavelength.last()?);
        let half_width = 0.5 * (hi - lo);
        let x = wavelength.mapv(|w| {
            if half_width > 0.0 {
                (w - lo) / half_width - 1.0
            } else {
                0.0
            }
        });
        let basis = legendre_basis(x.view(), self.degree);

        let mut keep = usable_pixels.clone();
        let mut continuum = Array1::zeros(flux.len());
        for _ in 0..self.max_iter.max(1) {
            if keep.iter().filter(|&&k| k).count() < n_terms {
                return None;
            }
            let coefficients = least_squares(&basis, flux, &keep)?;
            continuum = basis.dot(&coefficients);

            let (sum, count) = (0..flux.len())
                .filter(|&i| keep[i])
                .fold((0.0, 0usize), |(s, c), i| {
                    (s + (flux[i] - continuum[i]).powi(2), c + 1)
                });
            let sigma = (sum / count as f64).sqrt();

            let next: Vec<bool> = (0..flux.len())
                .map(|i| {
                    let r = flux[i] - continuum[i];
                    usable_pixels[i] && r >= -self.low_sigma * sigma && r <= self.high_sigma * sigma
                })
                .collect();
            if next == keep {
                break;
            }
            keep = next;
        }
        Some(continuum)
    }

    /// `flux / continuum`; missing pixels, and pixels where the continuum is not
    /// positive, are NaN. `None` as for [`ContinuumFit::continuum`].
    pub fn normalize(
        &self,
        wavelength: ArrayView1<f64>,
        flux: ArrayView1<f64>,
    ) -> Option<Array1<f64>> {
        let continuum = self.continuum(wavelength, flux)?;
        Some(
            ndarray::Zip::from(flux)
                .and(&continuum)
                .map_collect(|&f, &c| if c > 0.0 { usable(f) / c } else { f64::NAN }),
        )
    }

    fn check(&self) -> Result<(), SurveyError> {
        let settings = [
            ("continuum low_sigma", self.low_sigma),
            ("continuum high_sigma", self.high_sigma),
        ];
        for (name, value) in settings {
            if value.is_nan() || value <= 0.0 {
                return Err(SurveyError::InvalidSetting {
                    name,
                    value,
                    reason: "must be positive",
                });
            }
        }
        Ok(())
    }
}

/// Returns a pixel's flux, or NaN when it is missing (not finite or not positive).
fn usable(v: f64) -> f64 {
    if v.is_finite() && v > 0.0 {
        v
    } else {
        f64::NAN
    }
}

/// Builds the P × (degree + 1) matrix of Legendre polynomials `P_0(x)..P_degree(x)`.
fn legendre_basis(x: ArrayView1<f64>, degree: usize) -> Array2<f64> {
    let mut basis = Array2::zeros((x.len(), degree + 1));
    for (i, &t) in x.iter().enumerate() {
        let (mut previous, mut current) = (1.0, t);
        basis[[i, 0]] = 1.0;
        if degree >= 1 {
            basis[[i, 1]] = t;
        }
        for n in 1..degree {
            let n_f = n as f64;
            let next = ((2.0 * n_f + 1.0) * t * current - n_f * previous) / (n_f + 1.0);
            basis[[i, n + 1]] = next;
            previous = current;
            current = next;
        }
    }
    basis
}

/// Least-squares coefficients over the kept rows, by the normal equations and a
/// Cholesky solve; `None` if the normal matrix is not positive definite.
fn least_squares(basis: &Array2<f64>, y: ArrayView1<f64>, keep: &[bool]) -> Option<Array1<f64>> {
    let m = basis.ncols();
    let mut normal = Array2::<f64>::zeros((m, m));
    let mut rhs = Array1::<f64>::zeros(m);
    for (i, row) in basis.rows().into_iter().enumerate() {
        if !keep[i] {
            continue;
        }
        for a in 0..m {
            rhs[a] += row[a] * y[i];
            for b in 0..=a {
                normal[[a, b]] += row[a] * row[b];
            }
        }
    }

    // Cholesky factor L (lower triangle, in place), then L Lᵀ c = rhs.
    for j in 0..m {
        let mut d = normal[[j, j]];
        for k in 0..j {
            d -= normal[[j, k]].powi(2);
        }
        if d.is_nan() || d <= 0.0 {
            return None;
        }
        let d = d.sqrt();
        normal[[j, j]] = d;
        for i in j + 1..m {
            let mut v = normal[[i, j]];
            for k in 0..j {
                v -= normal[[i, k]] * normal[[j, k]];
            }
            normal[[i, j]] = v / d;
        }
    }
    let mut c = rhs;
    for i in 0..m {
        for k in 0..i {
            c[i] -= normal[[i, k]] * c[k];
        }
        c[i] /= normal[[i, i]];
    }
    for i in (0..m).rev() {
        for k in i + 1..m {
            c[i] -= normal[[k, i]] * c[k];
        }
        c[i] /= normal[[i, i]];
    }
    Some(c)
}
