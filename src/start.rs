//! A principal-component start for the Lux model built by [`crate::saved::build_lux`].
//!
//! The latents start at the leading principal-component scores of the standardized
//! outputs (labels and flux side by side, missing elements at 0, the column mean after
//! standardization), scaled to unit variance to match their Normal(0, 1) prior. The
//! maps start at the matching loadings, the biases at 0, and an intrinsic scatter at
//! each pixel's root-mean-square residual from that rank-K reconstruction.

use faer::{Mat, Side};
use lux_dsl::ndarray::{Array1, Array2};
use lux_dsl::{Dataset, Model, Params};

/// Failure to build a principal-component start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the principal-component start needs the output `{0}` in the data")]
    MissingOutput(&'static str),
    #[error("the principal-component start needs {needed} latents or fewer: the training set has {stars} stars")]
    TooManyLatents { needed: usize, stars: usize },
    #[error("the eigendecomposition of the {0}×{0} Gram matrix failed")]
    Eigen(usize),
}

/// Starting parameters for `model` (latent `z`, maps `A` and `B`, optional biases `a`
/// and `b` and scatter `s`) from the principal components of `data`.
pub fn principal_components(model: &Model, data: &Dataset) -> Result<Params, StartError> {
    let label = data.output("label").ok_or(StartError::MissingOutput("label"))?;
    let flux = data.output("flux").ok_or(StartError::MissingOutput("flux"))?;
    let n = data.n_objects();
    let k = model.latent_size();
    let (l, p) = (label.values().ncols(), flux.values().ncols());
    if k >= n {
        return Err(StartError::TooManyLatents { needed: k, stars: n });
    }

    // N × (L + P), masked elements at 0.
    let x = Mat::<f64>::from_fn(n, l + p, |i, j| {
        let (values, ivar, col) = if j < l { (label.values(), label.ivar(), j) } else { (flux.values(), flux.ivar(), j - l) };
        if ivar[[i, col]] > 0.0 { values[[i, col]] } else { 0.0 }
    });

    // Leading eigenvectors of X Xᵀ are the normalized scores.
    let gram = &x * x.transpose();
    let eigen = gram.self_adjoint_eigen(Side::Lower).map_err(|_| StartError::Eigen(n))?;
    let u = eigen.U();
    // faer sorts eigenvalues in ascending order.
    let columns: Vec<usize> = (0..k).map(|c| n - 1 - c).collect();
    let root_n = (n as f64).sqrt();
    let z = Array2::from_shape_fn((n, k), |(i, c)| u[(i, columns[c])] * root_n);
    let scores = Mat::<f64>::from_fn(n, k, |i, c| u[(i, columns[c])]);
    let loadings = x.transpose() * &scores * faer::Scale(1.0 / root_n);

    let mut params = Params::new(z.clone());
    let map = |rows: std::ops::Range<usize>| {
        Array2::from_shape_fn((rows.len(), k), |(r, c)| loadings[(rows.start + r, c)]).into_dyn()
    };
    params.insert("A", map(0..l));
    params.insert("B", map(l..l + p));
    if model.param_id("a").is_some() {
        params.insert("a", Array1::<f64>::zeros(l).into_dyn());
    }
    if model.param_id("b").is_some() {
        params.insert("b", Array1::<f64>::zeros(p).into_dyn());
    }
    if model.param_id("s").is_some() {
        let b = map(l..l + p).into_dimensionality::<lux_dsl::ndarray::Ix2>().expect("2-D");
        let reconstruction = z.dot(&b.t());
        let s = Array1::from_shape_fn(p, |j| {
            let (mut sum, mut count) = (0.0, 0usize);
            for i in 0..n {
                if flux.ivar()[[i, j]] > 0.0 {
                    let r = flux.values()[[i, j]] - reconstruction[[i, j]];
                    sum += r * r;
                    count += 1;
                }
            }
            if count > 0 { (sum / count as f64).sqrt() } else { 1.0 }
        });
        params.insert("s", s.into_dyn());
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::saved::{Dims, ModelSpec, build_lux};
    use lux_dsl::ndarray::Ix2;

    /// Rank-2 data: the start reproduces it exactly, with unit-variance latents.
    #[test]
    fn reproduces_low_rank_data() {
        let (n, l, p, k) = (40, 2, 9, 2);
        let z = Array2::from_shape_fn((n, k), |(i, j)| ((i * (j + 3)) as f64 * 0.7).sin());
        let w = Array2::from_shape_fn((l + p, k), |(r, j)| ((r + 2 * j) as f64 * 1.3).cos());
        let x = z.dot(&w.t());
        let label = x.slice(lux_dsl::ndarray::s![.., ..l]).to_owned();
        let flux = x.slice(lux_dsl::ndarray::s![.., l..]).to_owned();
        let data = Dataset::new()
            .with_errors("label", label.clone(), Array2::from_elem((n, l), 0.1))
            .unwrap()
            .with_errors("flux", flux.clone(), Array2::from_elem((n, p), 0.1))
            .unwrap();
        let model = build_lux(Dims { latents: k, labels: l, pixels: p }, ModelSpec { bias: true, scatter: true }).unwrap();

        let start = principal_components(&model, &data).unwrap();
        let z0 = start.latents();
        let a = start.get("A").unwrap().clone().into_dimensionality::<Ix2>().unwrap();
        let b = start.get("B").unwrap().clone().into_dimensionality::<Ix2>().unwrap();
        let gap_label = (&z0.dot(&a.t()) - &label).iter().fold(0.0f64, |m, d| m.max(d.abs()));
        let gap_flux = (&z0.dot(&b.t()) - &flux).iter().fold(0.0f64, |m, d| m.max(d.abs()));
        assert!(gap_label < 1e-10, "labels reproduced to {gap_label:e}");
        assert!(gap_flux < 1e-10, "flux reproduced to {gap_flux:e}");
        for c in 0..k {
            let variance = z0.column(c).mapv(|v| v * v).mean().unwrap();
            assert!((variance - 1.0).abs() < 1e-10, "latent {c}: mean square {variance}");
        }
        let s = start.get("s").unwrap();
        assert!(s.iter().all(|&v| v < 1e-6), "{s:?}");

        // More latents than stars cannot come from the principal components.
        let wide = build_lux(Dims { latents: n, labels: l, pixels: p }, ModelSpec { bias: false, scatter: false }).unwrap();
        assert!(matches!(principal_components(&wide, &data), Err(StartError::TooManyLatents { needed: 40, stars: 40 })));
    }
}
