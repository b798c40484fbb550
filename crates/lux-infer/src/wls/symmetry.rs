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
//! step lands at the valley's lowest point for the current fit. Up to rounding it cannot
//! raise the loss: the data term is unchanged, and the prior term is minimized over M.
//! When slices restrict M, BFGS searches from M = I and its result is used only if it
//! lowers the prior term.
//!
//! When every output also has a bias, `z → z + c`, `b_o → b_o − A_o c` leaves the data
//! term unchanged too, and the prior term is quadratic in c. Its minimum solves
//!
//! ```text
//! (λ_z N I + Σ_o μ_o A_oᵀ A_o) c = Σ_o μ_o A_oᵀ b_o − λ_z Σ_n z_n,
//! ```
//!
//! with μ_o the precision of the prior on b_o. [`translate`] takes that step.

use faer::linalg::solvers::{DenseSolveCore, Solve};
use faer::{Mat, Side};
use lux_dsl::{LatentSymmetry, Model, Params};
use ndarray::{Array2, Ix2};

/// Eigenvalues below this fraction of the largest make a matrix too close to singular
/// for the step, which is then skipped.
const MIN_RELATIVE_EIGENVALUE: f64 = 1e-12;

/// Applies the step in place. Returns false (and changes nothing) when the problem is
/// too close to singular for a step.
pub(crate) fn rebalance(model: &Model, params: &mut Params, symmetry: &LatentSymmetry) -> bool {
    let k = model.latent_size();
    let z = params.latents();
    let zt_z = z.t().dot(z);
    let s = Mat::<f64>::from_fn(k, k, |i, j| symmetry.latent_precision * zt_z[[i, j]]);

    // T_o = λ_o A_oᵀ A_o over the columns output o reads.
    let t: Vec<Mat<f64>> = symmetry
        .matrices
        .iter()
        .map(|map| {
            let a = matrix(params, &model.param(map.matrix).name);
            let at_a = a.t().dot(&a);
            Mat::<f64>::from_fn(at_a.nrows(), at_a.ncols(), |i, j| map.precision * at_a[[i, j]])
        })
        .collect();

    let m = if symmetry.is_full(k) {
        let mut total = Mat::<f64>::zeros(k, k);
        for t_o in &t {
            total += t_o;
        }
        closed_form(&s, &total)
    } else {
        restricted_optimum(&s, &t, symmetry, k)
    };
    let Some(m) = m else { return false };

    // Inverses of each output's block of M, checked before anything is changed.
    let mut inverses = Vec::with_capacity(symmetry.matrices.len());
    for map in &symmetry.matrices {
        let Some(inverse) = block_inverse(&m, &map.columns) else { return false };
        inverses.push(inverse);
    }

    let new_z = params.latents().dot(&to_ndarray(&m).t());
    params.set_latents(new_z);
    for (map, inverse) in symmetry.matrices.iter().zip(&inverses) {
        let name = &model.param(map.matrix).name;
        let a = matrix(params, name).dot(&to_ndarray(inverse));
        params.insert(name, a.into_dyn());
    }
    true
}

/// Applies the translation step in place (see the module documentation). Returns false
/// (and changes nothing) when the outputs lack biases or the system is singular.
pub(crate) fn translate(model: &Model, params: &mut Params, symmetry: &LatentSymmetry) -> bool {
    let k = model.latent_size();
    if !symmetry.allows_translation(k) {
        return false;
    }
    let z = params.latents();
    let n = z.nrows() as f64;
    let mut system = Array2::<f64>::eye(k) * (symmetry.latent_precision * n);
    let mut rhs = z.sum_axis(ndarray::Axis(0)) * -symmetry.latent_precision;
    for map in &symmetry.matrices {
        let (bias, precision) = map.bias.expect("checked by allows_translation");
        let a = matrix(params, &model.param(map.matrix).name);
        let b = params.get(&model.param(bias).name).expect("checked parameter").view().into_dimensionality::<ndarray::Ix1>().expect("vector").to_owned();
        system = system + a.t().dot(&a) * precision;
        rhs = rhs + a.t().dot(&b) * precision;
    }

    let system = Mat::<f64>::from_fn(k, k, |i, j| system[[i, j]]);
    let Ok(llt) = system.llt(Side::Lower) else { return false };
    let rhs = Mat::<f64>::from_fn(k, 1, |i, _| rhs[i]);
    let c = llt.solve(&rhs);
    let c = ndarray::Array1::from_shape_fn(k, |i| c[(i, 0)]);
    if c.iter().any(|x| !x.is_finite()) {
        return false;
    }

    let shifted = params.latents() + &c;
    params.set_latents(shifted);
    for map in &symmetry.matrices {
        let (bias, _) = map.bias.expect("checked by allows_translation");
        let a = matrix(params, &model.param(map.matrix).name);
        let name = &model.param(bias).name;
        let b = params.get(name).expect("checked parameter").view().into_dimensionality::<ndarray::Ix1>().expect("vector").to_owned();
        params.insert(name, (b - a.dot(&c)).into_dyn());
    }
    true
}

fn matrix(params: &Params, name: &str) -> Array2<f64> {
    params
        .get(name)
        .expect("checked parameter")
        .view()
        .into_dimensionality::<Ix2>()
        .expect("matrix")
        .to_owned()
}

/// `M = G^{1/2}` with `G = S^{-1/2} (S^{1/2} T S^{1/2})^{1/2} S^{-1/2}`, the optimum when
/// M may be any invertible matrix.
fn closed_form(s: &Mat<f64>, t: &Mat<f64>) -> Option<Mat<f64>> {
    let s_half = sym_power(s, 0.5)?;
    let s_inv_half = sym_power(s, -0.5)?;
    let inner = &s_half * t * &s_half;
    let inner_half = sym_power(&inner, 0.5)?;
    let g = &s_inv_half * &inner_half * &s_inv_half;
    sym_power(&g, 0.5)
}

/// Inverse of M restricted to `columns` (rows and columns), if it is well conditioned.
fn block_inverse(m: &Mat<f64>, columns: &std::ops::Range<usize>) -> Option<Mat<f64>> {
    let d = columns.len();
    let block = Mat::<f64>::from_fn(d, d, |i, j| m[(columns.start + i, columns.start + j)]);
    let inverse = block.partial_piv_lu().inverse();
    let finite = (0..d).all(|i| (0..d).all(|j| inverse[(i, j)].is_finite()));
    finite.then_some(inverse)
}

/// Prior term `½ tr(M S Mᵀ) + Σ_o ½ tr(M_o⁻ᵀ T_o M_o⁻¹)` and its gradient with respect to
/// M, restricted to the entries the symmetry allows. `None` where a block is singular.
fn prior_term(m: &Mat<f64>, s: &Mat<f64>, t: &[Mat<f64>], symmetry: &LatentSymmetry) -> Option<(f64, Mat<f64>)> {
    let ms = m * s;
    let mut value = 0.5 * (0..m.nrows()).map(|i| (0..m.ncols()).map(|j| ms[(i, j)] * m[(i, j)]).sum::<f64>()).sum::<f64>();
    let mut grad = ms;

    for (map, t_o) in symmetry.matrices.iter().zip(t) {
        let y = block_inverse(m, &map.columns)?;
        let ty = t_o * &y;
        let d = map.columns.len();
        value += 0.5 * (0..d).map(|i| (0..d).map(|j| y[(i, j)] * ty[(i, j)]).sum::<f64>()).sum::<f64>();
        // d/dX ½ tr(X⁻ᵀ T X⁻¹) = −Yᵀ T Y Yᵀ with Y = X⁻¹.
        let block_grad = y.transpose() * &ty * y.transpose();
        for i in 0..d {
            for j in 0..d {
                grad[(map.columns.start + i, map.columns.start + j)] -= block_grad[(i, j)];
            }
        }
    }
    for i in 0..m.nrows() {
        for j in 0..m.ncols() {
            if !symmetry.allows(i, j) {
                grad[(i, j)] = 0.0;
            }
        }
    }
    value.is_finite().then_some((value, grad))
}

/// Most BFGS iterations of the restricted problem (at most K² unknowns).
const MAX_BFGS_ITERATIONS: usize = 200;

/// Minimizes the prior term over the M the symmetry allows, by BFGS from M = I.
///
/// No closed form is known once slices forbid some entries of M, but the problem has at
/// most K² unknowns and every evaluation costs O(K³).
fn restricted_optimum(s: &Mat<f64>, t: &[Mat<f64>], symmetry: &LatentSymmetry, k: usize) -> Option<Mat<f64>> {
    let free: Vec<(usize, usize)> = (0..k).flat_map(|i| (0..k).map(move |j| (i, j))).filter(|&(i, j)| symmetry.allows(i, j)).collect();
    let n = free.len();
    let to_matrix = |x: &[f64]| {
        let mut m = Mat::<f64>::zeros(k, k);
        for (&(i, j), &v) in free.iter().zip(x) {
            m[(i, j)] = v;
        }
        m
    };
    let evaluate = |x: &[f64]| {
        prior_term(&to_matrix(x), s, t, symmetry).map(|(f, g)| (f, free.iter().map(|&(i, j)| g[(i, j)]).collect::<Vec<f64>>()))
    };

    let mut x: Vec<f64> = free.iter().map(|&(i, j)| if i == j { 1.0 } else { 0.0 }).collect();
    let (mut f, mut g) = evaluate(&x)?;
    let start = f;
    let mut h = Mat::<f64>::identity(n, n);
    let scale = f.abs().max(1.0);

    for _ in 0..MAX_BFGS_ITERATIONS {
        let direction: Vec<f64> = (0..n).map(|i| -(0..n).map(|j| h[(i, j)] * g[j]).sum::<f64>()).collect();
        let slope: f64 = direction.iter().zip(&g).map(|(d, g)| d * g).sum();
        if !(slope < 0.0) || -slope < 1e-14 * scale {
            break;
        }

        // Backtracking line search with the Armijo condition.
        let mut step = 1.0;
        let accepted = loop {
            let candidate: Vec<f64> = x.iter().zip(&direction).map(|(x, d)| x + step * d).collect();
            if let Some((fc, gc)) = evaluate(&candidate) {
                if fc <= f + 1e-4 * step * slope {
                    break Some((candidate, fc, gc));
                }
            }
            step *= 0.5;
            if step < 1e-12 {
                break None;
            }
        };
        let Some((candidate, fc, gc)) = accepted else { break };

        let sk: Vec<f64> = candidate.iter().zip(&x).map(|(a, b)| a - b).collect();
        let yk: Vec<f64> = gc.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy: f64 = sk.iter().zip(&yk).map(|(a, b)| a * b).sum();
        if sy > 1e-300 {
            // H ← (I − ρ s yᵀ) H (I − ρ y sᵀ) + ρ s sᵀ.
            let rho = 1.0 / sy;
            let hy: Vec<f64> = (0..n).map(|i| (0..n).map(|j| h[(i, j)] * yk[j]).sum()).collect();
            let yhy: f64 = yk.iter().zip(&hy).map(|(a, b)| a * b).sum();
            for i in 0..n {
                for j in 0..n {
                    h[(i, j)] += rho * ((1.0 + rho * yhy) * sk[i] * sk[j] - hy[i] * sk[j] - sk[i] * hy[j]);
                }
            }
        }
        let converged = (f - fc).abs() <= 1e-15 * scale;
        x = candidate;
        f = fc;
        g = gc;
        if converged {
            break;
        }
    }
    (f < start).then(|| to_matrix(&x))
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
    // U diag(λ^power) Uᵀ: one power per eigenvalue, then one matrix product.
    let u = eigen.U();
    let scaled = Mat::<f64>::from_fn(k, k, |i, l| u[(i, l)] * values[l].powf(power));
    Some(&scaled * u.transpose())
}

fn to_ndarray(x: &Mat<f64>) -> Array2<f64> {
    Array2::from_shape_fn((x.nrows(), x.ncols()), |(i, j)| x[(i, j)])
}

#[cfg(test)]
mod tests {
    use super::*;

    use lux_dsl::{Model, Prior, SymmetryMap};

    /// Builds a symmetric positive definite matrix: a Hilbert-like matrix plus a diagonal.
    fn spd(k: usize, seed: f64) -> Mat<f64> {
        Mat::<f64>::from_fn(k, k, |i, j| seed / (i + j + 1) as f64 + if i == j { 1.0 + i as f64 } else { 0.0 })
    }

    #[test]
    fn translation_minimizes_prior_term() {
        let mut b = Model::builder();
        let z = b.latent("z", 3, Prior::standard_normal()).unwrap();
        let a = b.param("A", &[2, 3], Prior::standard_normal()).unwrap();
        let a0 = b.param("a", &[2], Prior::normal(0.0, 0.5)).unwrap();
        let bb = b.param("B", &[5, 3], Prior::standard_normal()).unwrap();
        let b0 = b.param("b", &[5], Prior::standard_normal()).unwrap();
        let label = b.affine(a, z, a0).unwrap();
        let flux = b.affine(bb, z, b0).unwrap();
        b.observe("label", label, None).unwrap();
        b.observe("flux", flux, None).unwrap();
        let model = b.build().unwrap();
        let symmetry = model.structure().symmetry.unwrap();
        assert!(symmetry.allows_translation(3));

        // Shift every latent by a constant so the translation has work to do.
        let mut params = model.sample_params(40, 5);
        let shifted = params.latents() + 0.7;
        params.set_latents(shifted);
        let before = model.predict(&params).unwrap();
        // With every measurement missing the loss is the prior term alone.
        let empty = lux_dsl::Dataset::new()
            .with_errors("label", Array2::from_elem((40, 2), f64::NAN), Array2::ones((40, 2)))
            .unwrap()
            .with_errors("flux", Array2::from_elem((40, 5), f64::NAN), Array2::ones((40, 5)))
            .unwrap();
        let prior = |params: &Params| model.loss(params, &empty).unwrap();
        let loss_before = prior(&params);

        assert!(translate(&model, &mut params, &symmetry));
        let after = model.predict(&params).unwrap();
        for name in ["label", "flux"] {
            let diff = (&before[name] - &after[name]).iter().fold(0.0f64, |m, x| m.max(x.abs()));
            assert!(diff < 1e-12, "{name} changed by {diff:e}");
        }
        let loss_after = prior(&params);
        assert!(loss_after < loss_before - 1.0, "{loss_before} -> {loss_after}");

        // A second step finds nothing left to move: the first one reached the minimum.
        let latents = params.latents().clone();
        assert!(translate(&model, &mut params, &symmetry));
        let moved = (params.latents() - &latents).iter().fold(0.0f64, |m, x| m.max(x.abs()));
        assert!(moved < 1e-12, "moved {moved:e}");
    }

    #[test]
    fn bfgs_matches_closed_form_without_slices() {
        let k = 3;
        let mut b = Model::builder();
        let z = b.latent("z", k, Prior::standard_normal()).unwrap();
        let a = b.param("A", &[4, k], Prior::standard_normal()).unwrap();
        let mean = b.linear(a, z).unwrap();
        b.observe("flux", mean, None).unwrap();
        let model = b.build().unwrap();
        let symmetry = LatentSymmetry {
            latent: model.latent_id("z").unwrap(),
            latent_precision: 1.0,
            matrices: vec![SymmetryMap {
                matrix: model.param_id("A").unwrap(),
                precision: 1.0,
                columns: 0..k,
                bias: None,
            }],
        };
        let (s, t) = (spd(k, 0.37), spd(k, 1.91));

        let exact = closed_form(&s, &t).unwrap();
        let searched = restricted_optimum(&s, std::slice::from_ref(&t), &symmetry, k).unwrap();
        let (f_exact, _) = prior_term(&exact, &s, std::slice::from_ref(&t), &symmetry).unwrap();
        let (f_searched, _) = prior_term(&searched, &s, std::slice::from_ref(&t), &symmetry).unwrap();
        assert!((f_exact - f_searched).abs() < 1e-9 * f_exact.abs(), "{f_exact} vs {f_searched}");

        // M is defined up to a rotation, so compare G = MᵀM.
        let g_exact = exact.transpose() * &exact;
        let g_searched = searched.transpose() * &searched;
        for i in 0..k {
            for j in 0..k {
                assert!((g_exact[(i, j)] - g_searched[(i, j)]).abs() < 1e-6, "G[{i}, {j}]");
            }
        }
    }

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
