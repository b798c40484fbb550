//! Ridge regression from flux to labels, the baseline `lux fit` reports on the same
//! folds as its own cross-validation.
//!
//! Each pixel is standardized over the training stars' observed values and a missing
//! pixel is set to the mean (0). Each label, in its fitted transform, is centered and
//! regressed on all pixels by the dual form `w = Xᵀ (X Xᵀ + α I)⁻¹ y`, which costs an
//! N×N solve instead of a P×P one.

use faer::linalg::solvers::Solve;
use faer::{Mat, Side};
use lux::dsl::ndarray::{Array1, Array2, Axis};

/// Predicts the labels of `test_flux` from a ridge fit of `train_labels` on
/// `train_flux` with penalty `alpha` (in standardized flux units). Labels missing
/// (NaN) in training are left out of that label's fit. Returns NaN for a label with
/// no training value or a singular system.
pub fn ridge_predict(train_flux: &Array2<f64>, train_labels: &Array2<f64>, test_flux: &Array2<f64>, alpha: f64) -> Array2<f64> {
    let (mean, scale) = column_stats(train_flux);
    let train = standardize(train_flux, &mean, &scale);
    let test = standardize(test_flux, &mean, &scale);
    let mut out = Array2::from_elem((test_flux.nrows(), train_labels.ncols()), f64::NAN);

    for (l, labels) in train_labels.axis_iter(Axis(1)).enumerate() {
        let rows: Vec<usize> = (0..labels.len()).filter(|&i| labels[i].is_finite()).collect();
        if rows.is_empty() {
            continue;
        }
        let x = train.select(Axis(0), &rows);
        let y: Array1<f64> = rows.iter().map(|&i| labels[i]).collect();
        let center = y.mean().expect("rows are not empty");

        let gram = x.dot(&x.t());
        let n = rows.len();
        let system = Mat::<f64>::from_fn(n, n, |i, j| gram[[i, j]] + if i == j { alpha } else { 0.0 });
        let Ok(llt) = system.llt(Side::Lower) else { continue };
        let rhs = Mat::<f64>::from_fn(n, 1, |i, _| y[i] - center);
        let dual = llt.solve(&rhs);
        let dual = Array1::from_shape_fn(n, |i| dual[(i, 0)]);
        let weights = x.t().dot(&dual);
        out.column_mut(l).assign(&(test.dot(&weights) + center));
    }
    out
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
    use lux::dsl::ndarray::array;

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
