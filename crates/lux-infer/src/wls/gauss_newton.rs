//! Latents that enter an output nonlinearly (The Cannon's labels under `poly`): each
//! object's latents take damped Gauss-Newton (Levenberg-Marquardt) steps on its own
//! least-squares problem, with the global parameters fixed.
//!
//! For object n with residuals `r_o = y_o − f_o(z)`, weights `W_o` (the intrinsic
//! scatter included) and a Gaussian or flat prior `Λ (z − μ)`, a step solves
//!
//! ```text
//! (H + λ diag(H)) δ = Σ_o J_oᵀ W_o r_o − Λ (z − μ),   H = Σ_o J_oᵀ W_o J_o + Λ,
//! ```
//!
//! with `J_o` the Jacobian of `f_o` by central differences. Each object keeps its own
//! damping λ and accepts a step only if its loss falls, so the block loss never rises.

use faer::linalg::solvers::Solve;
use faer::{Mat, Side};
use lux_dsl::{Dataset, Model, Params};
use ndarray::{Array2, Array3};

use super::normal::output_weights;
use crate::error::FitError;

/// Gauss-Newton iterations per cycle.
pub(crate) const STEPS_PER_CYCLE: usize = 5;

/// Relative step of the central differences of the Jacobian.
const STEP: f64 = 1e-6;

/// Per-object state kept across cycles: the damping of each object.
#[derive(Debug, Clone)]
pub(crate) struct GaussNewton {
    damping: Vec<f64>,
}

impl GaussNewton {
    pub(crate) fn new(n_objects: usize) -> Self {
        Self {
            damping: vec![1e-3; n_objects],
        }
    }

    /// Runs [`STEPS_PER_CYCLE`] damped steps on every object's latents.
    pub(crate) fn run(&mut self, model: &Model, params: &mut Params, data: &Dataset) -> Result<(), FitError> {
        let k = model.latent_size();
        let mut prior_mean = vec![0.0; k];
        let mut prior_precision = vec![0.0; k];
        for latent in model.latents() {
            let (mean, precision) = latent.prior.gaussian().expect("checked when the runner was chosen");
            for j in latent.offset..latent.offset + latent.size {
                prior_mean[j] = mean;
                prior_precision[j] = precision;
            }
        }
        let outputs: Vec<(usize, Array2<f64>)> = model
            .observes()
            .iter()
            .enumerate()
            .filter_map(|(o, _)| output_weights(model, params, data, o).map(|w| (o, w.into_owned())))
            .collect();

        for _ in 0..STEPS_PER_CYCLE {
            let current = object_losses(model, params, data, &outputs, &prior_mean, &prior_precision)?;
            let (normal, gradient) = normal_equations(model, params, data, &outputs, &prior_mean, &prior_precision)?;
            let mut candidate = params.clone();
            let n = params.n_objects();
            for i in 0..n {
                let step = damped_step(&normal, &gradient, i, k, self.damping[i]);
                let mut row = candidate.latents_mut().row_mut(i);
                match step {
                    Some(step) => row.iter_mut().zip(&step).for_each(|(z, d)| *z += d),
                    None => self.damping[i] *= 10.0,
                }
            }
            let trial = object_losses(model, &candidate, data, &outputs, &prior_mean, &prior_precision)?;
            let mut moved = false;
            for i in 0..n {
                if trial[i].is_finite() && trial[i] < current[i] {
                    params.latents_mut().row_mut(i).assign(&candidate.latents().row(i));
                    self.damping[i] = (self.damping[i] * 0.1).max(1e-12);
                    moved = true;
                } else {
                    self.damping[i] = (self.damping[i] * 10.0).min(1e12);
                }
            }
            if !moved {
                break;
            }
        }
        Ok(())
    }
}

/// Computes each object's loss over its latents: ½ Σ w r² over its observed elements
/// plus ½ Σ λ (z − μ)² (constants left out).
fn object_losses(
    model: &Model,
    params: &Params,
    data: &Dataset,
    outputs: &[(usize, Array2<f64>)],
    prior_mean: &[f64],
    prior_precision: &[f64],
) -> Result<Vec<f64>, FitError> {
    let latents = params.latents();
    let mut losses: Vec<f64> = latents
        .rows()
        .into_iter()
        .map(|z| 0.5 * z.iter().zip(prior_mean).zip(prior_precision).map(|((x, m), l)| l * (x - m) * (x - m)).sum::<f64>())
        .collect();
    for (o, w) in outputs {
        let obs = &model.observes()[*o];
        let mean = model.evaluate(params, obs.mean)?;
        let y = data.output(&obs.name).expect("weights exist only for present outputs").values();
        for (i, loss) in losses.iter_mut().enumerate() {
            *loss += 0.5
                * y.row(i)
                    .iter()
                    .zip(mean.row(i))
                    .zip(w.row(i))
                    .map(|((y, f), w)| if *w > 0.0 { w * (y - f) * (y - f) } else { 0.0 })
                    .sum::<f64>();
        }
    }
    Ok(losses)
}

/// Returns the central-difference derivatives `D[i, m, j] = ∂f[i, m] / ∂z[i, j]` of `f`,
/// a function of the latents that gives N×M values with row i depending on object i's
/// latents only. Object i steps by `relative_step · max(1, max_j |z[i, j]|)`, and all
/// objects step together, so each latent costs two evaluations of `f`.
pub(crate) fn latent_derivatives(
    params: &Params,
    relative_step: f64,
    mut f: impl FnMut(&Params) -> Result<Array2<f64>, FitError>,
) -> Result<Array3<f64>, FitError> {
    let latents = params.latents();
    let (n, k) = latents.dim();
    let steps: Vec<f64> =
        latents.rows().into_iter().map(|z| relative_step * z.iter().fold(1.0f64, |m, x| m.max(x.abs()))).collect();

    let mut shifted = params.clone();
    let mut derivatives: Option<Array3<f64>> = None;
    for j in 0..k {
        let mut evaluate = |sign: f64| -> Result<Array2<f64>, FitError> {
            shifted.latents_mut().assign(latents);
            for (i, h) in steps.iter().enumerate() {
                shifted.latents_mut()[[i, j]] += sign * h;
            }
            f(&shifted)
        };
        let plus = evaluate(1.0)?;
        let minus = evaluate(-1.0)?;
        let out = derivatives.get_or_insert_with(|| Array3::zeros((n, plus.ncols(), k)));
        for i in 0..n {
            for m in 0..plus.ncols() {
                out[[i, m, j]] = (plus[[i, m]] - minus[[i, m]]) / (2.0 * steps[i]);
            }
        }
    }
    Ok(derivatives.unwrap_or_else(|| Array3::zeros((n, 0, k))))
}

/// Returns each object's `H` (N×K×K) and right-hand side (N×K) at the current latents.
#[allow(clippy::type_complexity)]
fn normal_equations(
    model: &Model,
    params: &Params,
    data: &Dataset,
    outputs: &[(usize, Array2<f64>)],
    prior_mean: &[f64],
    prior_precision: &[f64],
) -> Result<(Array3<f64>, Array2<f64>), FitError> {
    let n = params.n_objects();
    let k = model.latent_size();
    let latents = params.latents();

    let mut normal = Array3::<f64>::zeros((n, k, k));
    let mut gradient = Array2::<f64>::zeros((n, k));
    for i in 0..n {
        for j in 0..k {
            normal[[i, j, j]] = prior_precision[j];
            gradient[[i, j]] = -prior_precision[j] * (latents[[i, j]] - prior_mean[j]);
        }
    }

    for (o, w) in outputs {
        let obs = &model.observes()[*o];
        let p = obs.size;
        let mean = model.evaluate(params, obs.mean)?;
        let y = data.output(&obs.name).expect("weights exist only for present outputs").values();
        let jacobian = latent_derivatives(params, STEP, |shifted| Ok(model.evaluate(shifted, obs.mean)?))?;

        for i in 0..n {
            for e in 0..p {
                let weight = w[[i, e]];
                if weight <= 0.0 {
                    continue;
                }
                let residual = y[[i, e]] - mean[[i, e]];
                for a in 0..k {
                    let ja = jacobian[[i, e, a]] * weight;
                    gradient[[i, a]] += ja * residual;
                    for b in 0..k {
                        normal[[i, a, b]] += ja * jacobian[[i, e, b]];
                    }
                }
            }
        }
    }
    Ok((normal, gradient))
}

/// Solves `(H + λ diag(H)) δ = g` for object `i` by Cholesky; `None` when the damped
/// matrix is not positive definite.
fn damped_step(normal: &Array3<f64>, gradient: &Array2<f64>, i: usize, k: usize, damping: f64) -> Option<Vec<f64>> {
    let matrix = Mat::<f64>::from_fn(k, k, |r, c| {
        let h = normal[[i, r, c]];
        if r == c { h * (1.0 + damping) } else { h }
    });
    let llt = matrix.llt(Side::Lower).ok()?;
    let rhs = Mat::<f64>::from_fn(k, 1, |r, _| gradient[[i, r]]);
    let step = llt.solve(&rhs);
    let step: Vec<f64> = (0..k).map(|r| step[(r, 0)]).collect();
    step.iter().all(|v| v.is_finite()).then_some(step)
}
