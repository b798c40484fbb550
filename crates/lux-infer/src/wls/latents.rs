//! The latents step: with every global parameter fixed, each object's latent vector is
//! the solution of its own K×K normal equations
//!
//! ```text
//! (Σ_o J_oᵀ W_{n,o} J_o + Λ_z) z_n = Σ_o J_oᵀ W_{n,o} (y_{n,o} − c_o) + Λ_z μ_z
//! ```
//!
//! where `J_o z + c_o` is output o's mean (affine in the latents, proven from the graph).
//! All N normal matrices come from one matrix product `W_o · (J_o ⊗ J_o)`.

use faer::Par;
use lux_dsl::{Dataset, Model, Params};

use super::normal::{gemm_add, output_weights, packed_len, packed_outer, solve_packed, view, view_mut};
use crate::error::FitError;

/// Per-object normal equations of the latents: packed upper triangles (n × K(K+1)/2),
/// right-hand sides (n × K), and the prior precision and precision × mean per latent
/// element, which the solver adds to every system.
pub(crate) struct LatentNormal {
    pub normal: Vec<f64>,
    pub rhs: Vec<f64>,
    pub ridge: Vec<f64>,
    pub ridge_rhs: Vec<f64>,
}

/// Forms every object's normal equations for its latents at the current globals.
///
/// Panics unless the graph proves every output mean affine in the latents under
/// Gaussian or flat priors; callers check `Structure::latent_block().closed_form` first.
pub(crate) fn latent_normal(model: &Model, params: &Params, data: &Dataset, par: Par) -> LatentNormal {
    let n = data.n_objects();
    let k = model.latent_size();
    let t = packed_len(k);
    let mut normal = vec![0.0; n * t];
    let mut rhs = vec![0.0; n * k];

    for (observe, obs) in model.observes().iter().enumerate() {
        let Some(w) = output_weights(model, params, data, observe) else { continue };
        let out = data.output(&obs.name).expect("weights exist only for present outputs");
        let (design, offset) = model
            .latent_design(params, obs.mean)
            .expect("the latent block is closed form only when every mean is affine in the latents");
        let p = obs.size;

        let design = design.as_standard_layout();
        let design = design.as_slice().expect("standard layout");
        let mut outer = vec![0.0; p * t];
        packed_outer(design, k, &mut outer);

        let w = w.as_slice().expect("standard layout");
        gemm_add(view_mut(&mut normal, n, t), view(w, n, p), view(&outer, p, t), par);

        let mut weighted = out.values().clone();
        for (mut row, w_row) in weighted.rows_mut().into_iter().zip(w.chunks_exact(p)) {
            for ((y, &wi), &c) in row.iter_mut().zip(w_row).zip(offset.iter()) {
                *y = (*y - c) * wi;
            }
        }
        let weighted = weighted.as_slice().expect("standard layout");
        gemm_add(view_mut(&mut rhs, n, k), view(weighted, n, p), view(design, p, k), par);
    }

    let mut ridge = vec![0.0; k];
    let mut ridge_rhs = vec![0.0; k];
    for latent in model.latents() {
        let (mean, precision) = latent.prior.gaussian().expect("closed form implies a Gaussian or flat prior");
        for j in latent.offset..latent.offset + latent.size {
            ridge[j] = precision;
            ridge_rhs[j] = precision * mean;
        }
    }
    LatentNormal {
        normal,
        rhs,
        ridge,
        ridge_rhs,
    }
}

/// Solves every object's latents exactly.
pub(crate) fn solve_latents(model: &Model, params: &mut Params, data: &Dataset, par: Par) -> Result<(), FitError> {
    let k = model.latent_size();
    let LatentNormal {
        normal,
        mut rhs,
        ridge,
        ridge_rhs,
    } = latent_normal(model, params, data, par);

    let singular = |index: usize| FitError::Singular {
        block: "latents".to_string(),
        what: "object",
        index,
        detail: largest_weight(model, data, index),
    };
    solve_packed(&normal, &mut rhs, k, &ridge, &ridge_rhs).map_err(singular)?;
    // A factorization can pass with a normal matrix so large that the solution overflows.
    if let Some(position) = rhs.iter().position(|x| !x.is_finite()) {
        return Err(singular(position / k));
    }
    params
        .latents_mut()
        .as_slice_mut()
        .expect("standard layout")
        .copy_from_slice(&rhs);
    Ok(())
}

/// Describes the largest inverse variance of object `row` over the model's outputs.
fn largest_weight(model: &Model, data: &Dataset, row: usize) -> String {
    let mut best: Option<(&str, usize, f64)> = None;
    for obs in model.observes() {
        let Some(out) = data.output(&obs.name) else { continue };
        for (p, &w) in out.ivar().row(row).iter().enumerate() {
            if best.is_none_or(|(_, _, b)| w > b) {
                best = Some((&obs.name, p, w));
            }
        }
    }
    match best {
        Some((name, p, w)) if w > 0.0 => format!(" (largest inverse variance {w:e}, at `{name}` element {p})"),
        _ => " (no observed element)".to_string(),
    }
}
