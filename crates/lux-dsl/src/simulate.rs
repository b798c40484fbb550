//! Simulated data sets with known truth, for tutorials and recovery tests.

use ndarray::{Array2, Axis};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, Normal, StandardNormal, Uniform};

use crate::data::Dataset;
use crate::error::DataError;

/// A simulated linear data set and the truth behind it.
#[derive(Debug, Clone)]
pub struct LinearSimulation {
    /// Raw (not preprocessed) outputs `label` and `flux` with their 1-sigma errors.
    pub data: Dataset,
    /// True latents, N×K.
    pub latents: Array2<f64>,
    /// True label matrix, L×K.
    pub label_matrix: Array2<f64>,
    /// True flux matrix, P×K.
    pub flux_matrix: Array2<f64>,
}

/// Simulates the tutorial's linear set: `label = A z` and `flux = B z` observed with
/// errors drawn uniformly from [0.01, 0.1].
///
/// `A` (L×K) selects the first L latents (`A[i, i] = 1`). `B` (P×K) is Normal(0, 0.1)
/// noise plus two Gaussian lines, `4·exp(−½((i − P/2)/5)²)` on latent 0 and
/// `2·exp(−½((i − P/4)/3)²)` on latent 1. Latents are Normal(0, 1).
pub fn linear_tutorial(
    n_objects: usize,
    n_latents: usize,
    n_labels: usize,
    n_pixels: usize,
    seed: u64,
) -> Result<LinearSimulation, DataError> {
    assert!(n_latents >= 2, "need K ≥ 2 latents, got {n_latents}");
    assert!(n_labels <= n_latents, "need L ≤ K labels, got L = {n_labels} and K = {n_latents}");
    let mut rng = StdRng::seed_from_u64(seed);

    let mut label_matrix = Array2::zeros((n_labels, n_latents));
    for i in 0..n_labels {
        label_matrix[[i, i]] = 1.0;
    }
    let noise = Normal::new(0.0, 0.1).expect("valid scale");
    let mut flux_matrix = Array2::from_shape_simple_fn((n_pixels, n_latents), || noise.sample(&mut rng));
    let (first, second) = (n_pixels as f64 / 2.0, n_pixels as f64 / 4.0);
    for (i, mut row) in flux_matrix.axis_iter_mut(Axis(0)).enumerate() {
        let x = i as f64;
        row[0] += 4.0 * (-0.5 * ((x - first) / 5.0).powi(2)).exp();
        row[1] += 2.0 * (-0.5 * ((x - second) / 3.0).powi(2)).exp();
    }

    let latents = Array2::from_shape_simple_fn((n_objects, n_latents), || StandardNormal.sample(&mut rng));
    let error = Uniform::new(0.01, 0.1).expect("valid range");
    let label_err = Array2::from_shape_simple_fn((n_objects, n_labels), || error.sample(&mut rng));
    let flux_err = Array2::from_shape_simple_fn((n_objects, n_pixels), || error.sample(&mut rng));

    let label = observe(&latents.dot(&label_matrix.t()), &label_err, &mut rng);
    let flux = observe(&latents.dot(&flux_matrix.t()), &flux_err, &mut rng);
    let data = Dataset::new()
        .with_errors("label", label, label_err)?
        .with_errors("flux", flux, flux_err)?;
    Ok(LinearSimulation {
        data,
        latents,
        label_matrix,
        flux_matrix,
    })
}

/// Adds Gaussian noise of the given 1-sigma errors to `truth`.
pub fn observe(truth: &Array2<f64>, errors: &Array2<f64>, rng: &mut impl Rng) -> Array2<f64> {
    let mut out = truth.clone();
    out.zip_mut_with(errors, |y, &e| {
        let u: f64 = StandardNormal.sample(rng);
        *y += e * u;
    });
    out
}
