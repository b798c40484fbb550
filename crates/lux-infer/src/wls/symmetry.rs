//! The rebalancing step along the latent-space symmetry.
//!
//! When every mean is `A_o z` (or `A_o z + b_o`) the data term is unchanged by
//! `z → M z`, `A_o → A_o M⁻¹` for any invertible M; only the zero-mean Normal priors
//! pick M. With `S = λ_z ZᵀZ` and `T = Σ_o λ_o A_oᵀ A_o`, the prior term is
//! `½ tr(G S) + ½ tr(T G⁻¹)` with `G = MᵀM`, minimized where `G S G = T`:
//!
//! ```text
//! G = S^{-1/2} (S^{1/2} T S^{1/2})^{1/2} S^{-1/2},   M = G^{1/2}.
//! ```
//!
//! Alternating exact solves move along this nearly flat valley only slowly. One such
//! step lands at the valley's lowest point for the current fit. It never raises the
//! loss, because the data term is unchanged and the prior term is minimized over M.

use faer::{Mat, Side};
use lux_dsl::{LatentSymmetry, Model, Params};
use ndarray::{Array2, Ix2};

/// Eigenvalues below this fraction of the largest make a matrix too close to singular
/// for the step, which is then skipped.
const MIN_RELATIVE_EIGENVALUE: f64 = 1e-12;

/// Applies the step in place. Returns false (and changes nothing) when `S` or `T` is
/// close to singular.
pub(crate) fn rebalance(model: &Model, params: &mut Params, symmetry: &LatentSymmetry) -> bool {
    let k = model.latent_size();
    let z = params.latents();
    let zt_z = z.t().dot(z);
    let s = Mat::<f64>::from_fn(k, k, |i, j| symmetry.latent_precision * zt_z[[i, j]]);

    let mut t = Mat::<f64>::zeros(k, k);
    for &(id, precision) in &symmetry.matrices {
        let a = params
            .get(&model.param(id).name)
            .expect("checked parameter")
            .view()
            .into_dimensionality::<Ix2>()
            .expect("matrix");
        let at_a = a.t().dot(&a);
        t += Mat::<f64>::from_fn(k, k, |i, j| precision * at_a[[i, j]]);
    }

    let Some(s_half) = sym_power(&s, 0.5) else { return false };
    let Some(s_inv_half) = sym_power(&s, -0.5) else { return false };
    let inner = &s_half * &t * &s_half;
    let Some(inner_half) = sym_power(&inner, 0.5) else { return false };
    let g = &s_inv_half * &inner_half * &s_inv_half;
    let Some(m) = sym_power(&g, 0.5) else { return false };
    let Some(m_inv) = sym_power(&g, -0.5) else { return false };

    let m = to_ndarray(&m);
    let m_inv = to_ndarray(&m_inv);
    let new_z = params.latents().dot(&m.t());
    params.set_latents(new_z);
    for &(id, _) in &symmetry.matrices {
        let name = &model.param(id).name;
        let a = params
            .get(name)
            .expect("checked parameter")
            .view()
            .into_dimensionality::<Ix2>()
            .expect("matrix")
            .dot(&m_inv);
        params.insert(name, a.into_dyn());
    }
    true
}

/// `X^power` of a symmetric positive definite matrix, by its eigendecomposition.
fn sym_power(x: &Mat<f64>, power: f64) -> Option<Mat<f64>> {
    let k = x.nrows();
    let symmetric = Mat::<f64>::from_fn(k, k, |i, j| 0.5 * (x[(i, j)] + x[(j, i)]));
    let eigen = symmetric.self_adjoint_eigen(Side::Lower).ok()?;
    let values: Vec<f64> = (0..k).map(|i| eigen.S()[i]).collect();
    let largest = values.iter().fold(0.0f64, |m, &v| m.max(v));
    if !(largest > 0.0) || values.iter().any(|&v| !(v > MIN_RELATIVE_EIGENVALUE * largest)) {
        return None;
    }
    let u = eigen.U();
    Some(Mat::<f64>::from_fn(k, k, |i, j| {
        (0..k).map(|l| u[(i, l)] * values[l].powf(power) * u[(j, l)]).sum()
    }))
}

fn to_ndarray(x: &Mat<f64>) -> Array2<f64> {
    Array2::from_shape_fn((x.nrows(), x.ncols()), |(i, j)| x[(i, j)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_of_diagonal() {
        let x = Mat::<f64>::from_fn(2, 2, |i, j| if i == j { [4.0, 9.0][i] } else { 0.0 });
        let h = sym_power(&x, 0.5).unwrap();
        assert!((h[(0, 0)] - 2.0).abs() < 1e-14);
        assert!((h[(1, 1)] - 3.0).abs() < 1e-14);
        assert!(h[(0, 1)].abs() < 1e-14);
        let singular = Mat::<f64>::zeros(2, 2);
        assert!(sym_power(&singular, 0.5).is_none());
    }
}
