//! Ridge regression from flux to labels: the baseline `lux fit` reports on the same
//! folds as its own cross-validation, and the starting labels of The Cannon's inference.
//!
//! Each pixel is standardized over the training stars' observed values and a missing
//! pixel is set to the mean (0). Each label is centered and regressed on all pixels by
//! the dual form `w = Xᵀ (X Xᵀ + α I)⁻¹ y`, which costs an N×N solve instead of a P×P
//! one.

use faer::linalg::solvers::Solve;
use faer::{Mat, Side};
use ndarray::{Array1, Array2, Axis};
use serde::{Deserialize, Serialize};

/// A fitted ridge regression from flux to labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ridge {
    /// Penalty α, in standardized flux units.
    pub alpha: f64,
    /// Mean and scale of each pixel over the training stars.
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
    /// L×P weights on the standardized pixels; NaN for a label without a fit.
    pub weights: Vec<Vec<f64>>,
    /// Mean of each label over its training stars.
    pub center: Vec<f64>,
}

impl Ridge {
    /// Fits each label of `labels` (N×L) on `flux` (N×P) with penalty `alpha`. Labels
    /// missing (NaN) are left out of that label's fit. A label with no training value
    /// or a singular system gets NaN weights, so it predicts NaN.
    pub fn fit(flux: &Array2<f64>, labels: &Array2<f64>, alpha: f64) -> Self {
        let (mean, scale) = column_stats(flux);
        let x_all = standardize(flux, &mean, &scale);
        let p = flux.ncols();
        let mut weights = vec![vec![f64::NAN; p]; labels.ncols()];
        let mut centers = vec![f64::NAN; labels.ncols()];

        for (l, column) in labels.axis_iter(Axis(1)).enumerate() {
            let rows: Vec<usize> = (0..column.len()).filter(|&i| column[i].is_finite()).collect();
            if rows.is_empty() {
                continue;
            }
            let x = x_all.select(Axis(0), &rows);
            let y: Array1<f64> = rows.iter().map(|&i| column[i]).collect();
            let center = y.mean().expect("rows are not empty");

            let gram = x.dot(&x.t());
            let n = rows.len();
            let system = Mat::<f64>::from_fn(n, n, |i, j| gram[[i, j]] + if i == j { alpha } else { 0.0 });
            let Ok(llt) = system.llt(Side::Lower) else { continue };
            let rhs = Mat::<f64>::from_fn(n, 1, |i, _| y[i] - center);
            let dual = llt.solve(&rhs);
            let dual = Array1::from_shape_fn(n, |i| dual[(i, 0)]);
            weights[l] = x.t().dot(&dual).to_vec();
            centers[l] = center;
        }
        Self {
            alpha,
            mean: mean.to_vec(),
            scale: scale.to_vec(),
            weights,
            center: centers,
        }
    }

    /// Predicts the labels (N×L) of `flux` (N×P, NaN where missing).
    pub fn predict(&self, flux: &Array2<f64>) -> Array2<f64> {
        let x = standardize(flux, &Array1::from(self.mean.clone()), &Array1::from(self.scale.clone()));
        let mut out = Array2::from_elem((flux.nrows(), self.weights.len()), f64::NAN);
        for (l, w) in self.weights.iter().enumerate() {
            let w = Array1::from(w.clone());
            out.column_mut(l).assign(&(x.dot(&w) + self.center[l]));
        }
        out
    }
}

/// Predicts the labels of `test_flux` from a ridge fit of `train_labels` on
/// `train_flux` with penalty `alpha`.
pub fn ridge_predict(train_flux: &Array2<f64>, train_labels: &Array2<f64>, test_flux: &Array2<f64>, alpha: f64) -> Array2<f64> {
    Ridge::fit(train_flux, train_labels, alpha).predict(test_flux)
}

/// Mean and population standard deviation of each column over its finite values; a
/// column without spread gets scale 1, so it standardizes to 0.
fn column_stats(flux: &Array2<f64>) -> (Array1<f64>, Array1<f64>) {
    let p = flux.ncols();
    let mut mean = Array1::zeros(p);
    let mut scale = Array1::ones(p);
    for (j, column) in flux.axis_iter(Axis(1)).enumerate() {
        let values: Vec<f64> = column.iter().copied().filter(|v| v.is_finite()).collect();
        if values.is_empty() {
            continue;
        }
        let m = values.iter().sum::<f64>() / values.len() as f64;
        let var = values.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / values.len() as f64;
        mean[j] = m;
        if var > 0.0 {
            scale[j] = var.sqrt();
        }
    }
    (mean, scale)
}

fn standardize(flux: &Array2<f64>, mean: &Array1<f64>, scale: &Array1<f64>) -> Array2<f64> {
    let mut out = (flux - mean) / scale;
    out.mapv_inplace(|v| if v.is_finite() { v } else { 0.0 });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn ridge_matches_primal_solution() {
        // Two pixels, four stars; the label is exactly 2·(pixel 0) − (pixel 1) in
        // standardized units, so a tiny penalty recovers it on new stars.
        let flux = array![[1.0, 0.0], [2.0, 1.0], [3.0, 1.0], [4.0, 3.0]];
        let (mean, scale) = column_stats(&flux);
        let z = standardize(&flux, &mean, &scale);
        let labels = (&z.column(0) * 2.0 - &z.column(1)).insert_axis(Axis(1)).to_owned();
        let test = array![[2.5, 2.0], [0.0, 0.0]];
        let zt = standardize(&test, &mean, &scale);
        let expected = &zt.column(0) * 2.0 - &zt.column(1);

        let predicted = ridge_predict(&flux, &labels, &test, 1e-10);
        for (p, e) in predicted.column(0).iter().zip(&expected) {
            assert!((p - e).abs() < 1e-6, "{p} vs {e}");
        }
    }

    #[test]
    fn ridge_skips_missing_labels_and_pixels() {
        let flux = array![[1.0, f64::NAN], [2.0, 1.0], [3.0, 1.0], [4.0, 3.0]];
        let labels = array![[1.0, f64::NAN], [2.0, f64::NAN], [3.0, f64::NAN], [f64::NAN, f64::NAN]];
        let predicted = ridge_predict(&flux, &labels, &flux, 1.0);
        assert!(predicted.column(0).iter().all(|v| v.is_finite()));
        assert!(predicted.column(1).iter().all(|v| v.is_nan()));
    }
}
