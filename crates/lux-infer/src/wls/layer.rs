//! The output step: with the latents fixed, the final linear layer `A x + b` of one
//! output is solved row by row. For output element p,
//!
//! ```text
//! (Σ_n w_{n,p} x̃_n x̃_nᵀ + Λ) θ_p = Σ_n w_{n,p} y_{n,p} x̃_n + Λ μ
//! ```
//!
//! with `x̃_n = [x_n, 1]` (the 1 only when there is a bias) and `θ_p = [a_p, b_p]`.
//! All P normal matrices come from one matrix product `Wᵀ · (x̃ ⊗ x̃)`.

use faer::Par;
use lux_dsl::{Dataset, LinearLayer, Model, Params};
use ndarray::{Array2, s};

use super::normal::{gemm_add, packed_len, packed_outer, solve_packed, view, view_mut};
use crate::error::FitError;

/// Solves the layer of output `observe` exactly, writing `A` and `b` into `params`.
pub(crate) fn solve_layer(
    model: &Model,
    params: &mut Params,
    data: &Dataset,
    observe: usize,
    layer: &LinearLayer,
    weights: &Array2<f64>,
    block: &str,
    par: Par,
) -> Result<(), FitError> {
    let obs = &model.observes()[observe];
    let out = data.output(&obs.name).expect("weights exist only for present outputs");
    let n = data.n_objects();
    let rows = layer.rows.clone();
    let p = rows.len();

    // This layer's columns of the weights and of the data, less any fixed offset.
    let weights = weights.slice(s![.., rows.clone()]);
    let weights = weights.as_standard_layout();
    let mut weighted = out.values().slice(s![.., rows]).to_owned();
    if let Some(offset) = layer.offset {
        weighted -= &model.evaluate(params, offset)?;
    }
    weighted.zip_mut_with(&weights, |y, &wi| *y *= wi);

    // Design matrix x̃ (N×D').
    let features = match (layer.matrix, layer.features) {
        (Some(_), Some(x)) => Some(model.evaluate(params, x)?),
        _ => None,
    };
    let d_matrix = features.as_ref().map_or(0, |f| f.ncols());
    let d = d_matrix + usize::from(layer.bias.is_some());
    let mut design = vec![1.0; n * d];
    if let Some(f) = &features {
        for (row, f_row) in design.chunks_exact_mut(d).zip(f.rows()) {
            for (x, &v) in row.iter_mut().zip(f_row.iter()) {
                *x = v;
            }
        }
    }

    let t = packed_len(d);
    let mut outer = vec![0.0; n * t];
    packed_outer(&design, d, &mut outer);

    let w = weights.as_slice().expect("standard layout");
    let mut normal = vec![0.0; p * t];
    gemm_add(view_mut(&mut normal, p, t), view(w, n, p).transpose(), view(&outer, n, t), par);

    let weighted = weighted.as_slice().expect("standard layout");
    let mut rhs = vec![0.0; p * d];
    gemm_add(view_mut(&mut rhs, p, d), view(weighted, n, p).transpose(), view(&design, n, d), par);

    let mut ridge = vec![0.0; d];
    let mut ridge_rhs = vec![0.0; d];
    if let Some(a) = layer.matrix {
        let (mean, precision) = model.param(a).prior.gaussian().expect("closed form implies a Gaussian prior");
        ridge[..d_matrix].fill(precision);
        ridge_rhs[..d_matrix].fill(precision * mean);
    }
    if let Some(b) = layer.bias {
        let (mean, precision) = model.param(b).prior.gaussian().expect("closed form implies a Gaussian prior");
        ridge[d - 1] = precision;
        ridge_rhs[d - 1] = precision * mean;
    }

    let singular = |row: usize| {
        let column = layer.rows.start + row;
        let (object, largest) = weights
            .column(row)
            .iter()
            .enumerate()
            .fold((0, 0.0f64), |best, (n, &x)| if x > best.1 { (n, x) } else { best });
        FitError::Singular {
            block: block.to_string(),
            what: "output element",
            index: column,
            detail: if largest > 0.0 {
                format!(" (largest inverse variance {largest:e}, at object {object})")
            } else {
                " (no object observes it)".to_string()
            },
        }
    };
    solve_packed(&normal, &mut rhs, d, &ridge, &ridge_rhs).map_err(singular)?;
    if let Some(position) = rhs.iter().position(|x| !x.is_finite()) {
        return Err(singular(position / d));
    }

    if let Some(a) = layer.matrix {
        let target = params
            .get_mut(&model.param(a).name)
            .expect("checked parameter")
            .as_slice_mut()
            .expect("standard layout");
        for (row, solution) in target.chunks_exact_mut(d_matrix).zip(rhs.chunks_exact(d)) {
            row.copy_from_slice(&solution[..d_matrix]);
        }
    }
    if let Some(b) = layer.bias {
        let target = params
            .get_mut(&model.param(b).name)
            .expect("checked parameter")
            .as_slice_mut()
            .expect("standard layout");
        for (value, solution) in target.iter_mut().zip(rhs.chunks_exact(d)) {
            *value = solution[d - 1];
        }
    }
    Ok(())
}
