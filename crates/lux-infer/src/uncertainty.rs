//! Posterior uncertainties of each object's latents, and of the outputs predicted from
//! them, with the global parameters held at their fitted values.
//!
//! When every output mean is affine in the latents (proven from the graph) and the
//! latent priors are Gaussian or flat, each object's latent posterior is Gaussian and
//! its covariance is exactly the inverse of that object's normal matrix. Otherwise the
//! Laplace approximation inverts the Hessian of the loss at the given latents, which
//! should be an optimum (the latents of a fit).

use faer::Par;
use lux_dsl::{DataError, Dataset, Model, Params};
use ndarray::{Array2, Array3, ArrayView2, Axis};

use crate::engine::Free;
use crate::error::FitError;
use crate::gradient::{GradientBackend, Objective};
use crate::wls::gauss_newton::latent_derivatives;
use crate::wls::{latents, normal};

/// Method by which a latent covariance was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CovarianceMethod {
    /// The inverse of each object's normal matrix: exact for latents that enter every
    /// output mean affinely.
    Exact,
    /// The inverse of each object's Hessian of the loss (Laplace approximation), by
    /// central differences of the analytic gradient.
    Laplace,
}

/// Posterior covariance of every object's latents.
#[derive(Debug, Clone)]
pub struct LatentCovariance {
    pub method: CovarianceMethod,
    /// N×K×K. An object whose normal matrix or Hessian is not positive definite has
    /// NaN throughout, never a small number that would look precise.
    pub covariance: Array3<f64>,
    /// Objects whose matrix was not positive definite (their covariance is NaN).
    pub not_positive_definite: Vec<usize>,
}

impl LatentCovariance {
    /// Returns the posterior standard deviation of each latent element, N×K.
    pub fn std(&self) -> Array2<f64> {
        let (n, k, _) = self.covariance.dim();
        Array2::from_shape_fn((n, k), |(i, j)| self.covariance[[i, j, j]].sqrt())
    }
}

/// Relative step of the central differences: the truncation error is O(h²) and the
/// rounding error O(ε/h), both near 1e-10 for unit-scale latents.
const STEP: f64 = 1e-5;

/// Computes the posterior covariance of the latents in `params` given `data`, with the
/// global parameters fixed: exactly when the graph proves the latents linear-Gaussian,
/// by the Laplace approximation otherwise.
pub fn latent_covariance(model: &Model, params: &Params, data: &Dataset) -> Result<LatentCovariance, FitError> {
    model.check_params(params)?;
    model.check_data(params, data)?;
    if model.structure().latent_block().closed_form {
        Ok(exact_covariance(model, params, data))
    } else {
        laplace_latent_covariance(model, params, data)
    }
}

fn exact_covariance(model: &Model, params: &Params, data: &Dataset) -> LatentCovariance {
    let k = model.latent_size();
    let normal = latents::latent_normal(model, params, data, Par::Seq);
    let (inverse, failed) = normal::invert_packed(&normal.normal, k, &normal.ridge);
    LatentCovariance {
        method: CovarianceMethod::Exact,
        covariance: Array3::from_shape_vec((data.n_objects(), k, k), inverse).expect("n×k×k inverses"),
        not_positive_definite: failed,
    }
}

/// Computes the Laplace approximation of the latent covariance, whatever the model's
/// structure: the inverse Hessian of the loss over each object's latents.
///
/// Each object's Hessian comes from 2K gradient evaluations: the loss is a sum over
/// objects, so shifting latent j of every object at once gives column j of every
/// object's Hessian. For a model linear in the latents it equals the exact covariance
/// up to rounding.
pub fn laplace_latent_covariance(model: &Model, params: &Params, data: &Dataset) -> Result<LatentCovariance, FitError> {
    model.check_params(params)?;
    model.check_data(params, data)?;
    let n = data.n_objects();
    let k = model.latent_size();
    let free = Free {
        latents: true,
        params: vec![false; model.params().len()],
    };
    let objective = Objective::new(model, data, free, GradientBackend::Auto);

    let hessian = latent_derivatives(params, STEP, |shifted| Ok(objective.loss_grad(shifted)?.latents))?;

    // Symmetrize and pack the upper triangles for the batched inversion.
    let t = normal::packed_len(k);
    let mut packed = vec![0.0; n * t];
    for (i, row) in packed.chunks_exact_mut(t).enumerate() {
        let mut idx = 0;
        for a in 0..k {
            for b in a..k {
                row[idx] = 0.5 * (hessian[[i, a, b]] + hessian[[i, b, a]]);
                idx += 1;
            }
        }
    }
    let (inverse, mut failed) = normal::invert_packed(&packed, k, &vec![0.0; k]);
    let mut covariance = Array3::from_shape_vec((n, k, k), inverse).expect("n×k×k inverses");

    // A non-finite Hessian (a gradient that overflowed) is no estimate either.
    for (i, mut matrix) in covariance.axis_iter_mut(Axis(0)).enumerate() {
        if matrix.iter().any(|x| !x.is_finite()) && !failed.contains(&i) {
            matrix.fill(f64::NAN);
            failed.push(i);
        }
    }
    failed.sort_unstable();
    Ok(LatentCovariance {
        method: CovarianceMethod::Laplace,
        covariance,
        not_positive_definite: failed,
    })
}

/// Posterior covariance of each row of the linear map of one output, `mean = A x + b`,
/// given the features `x` of the training objects: row p of `[A b]` has covariance
/// `(Σ_n w_np x̃_n x̃_nᵀ + Λ)⁻¹`, with `x̃ = [x, 1]` when there is a bias and Λ the
/// prior precisions. It is exact for the map conditional on the training latents.
#[derive(Debug, Clone)]
pub struct MapCovariance {
    pub output: String,
    /// P×D×D, D = feature size (+1 with a bias). NaN for a row whose matrix is not
    /// positive definite.
    pub rows: Array3<f64>,
    /// Expression the map multiplies, evaluated again on new objects.
    features: lux_dsl::ExprId,
    bias: bool,
}

/// Computes the covariance of the linear map of `output` from the training fit's
/// parameters and data. Fails unless the output's mean is one linear or affine map
/// of an expression of the latents with Gaussian or flat priors (the Lux form).
pub fn map_covariance(model: &Model, trained: &Params, train: &Dataset, output: &str) -> Result<MapCovariance, FitError> {
    let (observe, obs) = model
        .observes()
        .iter()
        .enumerate()
        .find(|(_, o)| o.name == output)
        .ok_or_else(|| not_an_output(model, output))?;
    model.check_params(trained)?;
    model.check_data(trained, train)?;
    let structure = model.structure();
    let layer = match structure.layers[observe].as_deref() {
        Some([layer]) if layer.matrix.is_some() && layer.features.is_some() && layer.rows == (0..obs.size) => layer,
        _ => {
            return Err(FitError::InvalidSetting {
                setting: "output",
                value: output.to_string(),
                reason: "map uncertainties need a mean of the form A x or A x + b",
            });
        }
    };
    let features = layer.features.expect("checked above");
    let x = model.evaluate(trained, features)?;
    let bias = layer.bias.is_some();
    let d = x.ncols() + usize::from(bias);
    let mut ridge = vec![0.0; d];
    let matrix_prior = model.param(layer.matrix.expect("checked above")).prior.gaussian();
    let bias_prior = layer.bias.map(|b| model.param(b).prior.gaussian());
    let (Some((_, matrix_precision)), None | Some(Some(_))) = (matrix_prior, bias_prior) else {
        return Err(FitError::InvalidSetting {
            setting: "output",
            value: output.to_string(),
            reason: "map uncertainties need Gaussian or flat priors on the map",
        });
    };
    ridge[..x.ncols()].fill(matrix_precision);
    if let Some(Some((_, precision))) = bias_prior {
        ridge[d - 1] = precision;
    }

    let w = normal::output_weights(model, trained, train, observe).ok_or_else(|| DataError::UnknownOutput {
        name: output.to_string(),
        fitted: train.names().collect::<Vec<_>>().join(", "),
    })?;
    let n = x.nrows();
    let mut design = Array2::<f64>::ones((n, d));
    design.slice_mut(ndarray::s![.., ..x.ncols()]).assign(&x);
    let t = normal::packed_len(d);
    let mut outer = vec![0.0; n * t];
    normal::packed_outer(design.as_slice().expect("standard layout"), d, &mut outer);
    // Row p's normal matrix is Σ_n w_np (x̃ x̃ᵀ)_n: one product Wᵀ · outer for all rows.
    let mut packed = vec![0.0; obs.size * t];
    let wt = w.t().as_standard_layout().into_owned();
    normal::gemm_add(
        normal::view_mut(&mut packed, obs.size, t),
        normal::view(wt.as_slice().expect("standard layout"), obs.size, n),
        normal::view(&outer, n, t),
        Par::Seq,
    );
    let (inverse, _) = normal::invert_packed(&packed, d, &ridge);
    Ok(MapCovariance {
        output: output.to_string(),
        rows: Array3::from_shape_vec((obs.size, d, d), inverse).expect("p×d×d inverses"),
        features,
        bias,
    })
}

fn not_an_output(model: &Model, output: &str) -> FitError {
    DataError::NotAnOutput {
        name: output.to_string(),
        outputs: model.observes().iter().map(|o| format!("`{}`", o.name)).collect::<Vec<_>>().join(", "),
    }
    .into()
}

/// Uncertainty of one output's predicted mean, propagated from the latent posterior.
///
/// It is J Σ Jᵀ per object, with J the Jacobian of the mean with respect to the latents
/// and Σ the latent covariance, plus `x̃ᵀ Σ_p x̃` per element when the covariance of the
/// map is given ([`map_covariance`]). It leaves out the intrinsic scatter.
#[derive(Debug, Clone)]
pub struct PredictionUncertainty {
    /// Predicted mean, N×P, in the units of the data the model was fitted to.
    pub mean: Array2<f64>,
    /// Standard deviation of each predicted element, N×P.
    pub std: Array2<f64>,
    /// Full covariance of each object's predicted mean, N×P×P, when requested.
    pub covariance: Option<Array3<f64>>,
}

/// Propagates the latent covariance to the predicted mean of `output`.
///
/// The Jacobian comes from central differences of the output's mean, which are exact
/// to rounding for a mean affine in the latents. With `full_covariance` the N×P×P
/// covariances are returned too; for a spectrum of thousands of pixels they take
/// gigabytes, so ask for them only for short outputs such as labels.
pub fn predict_with_uncertainty(
    model: &Model,
    params: &Params,
    covariance: &LatentCovariance,
    map: Option<&MapCovariance>,
    output: &str,
    full_covariance: bool,
) -> Result<PredictionUncertainty, FitError> {
    let obs = model.observe(output).ok_or_else(|| not_an_output(model, output))?;
    if let Some(map) = map.filter(|m| m.output != output) {
        return Err(FitError::InvalidSetting {
            setting: "map covariance",
            value: map.output.clone(),
            reason: "pass the map covariance of the output being predicted",
        });
    }
    model.check_params(params)?;
    let n = params.n_objects();
    let k = model.latent_size();
    let p = obs.size;
    if covariance.covariance.dim() != (n, k, k) {
        return Err(DataError::LatentShape {
            found: covariance.covariance.shape().to_vec(),
            expected: vec![n, k, k],
            hint: "pass the covariance computed for these latents".to_string(),
        }
        .into());
    }

    let mean = model.evaluate(params, obs.mean)?;
    let jacobian = latent_derivatives(params, STEP, |shifted| Ok(model.evaluate(shifted, obs.mean)?))?;

    // Variance from the map's rows: x̃ᵀ Σ_p x̃ per object and element.
    let mut map_variance = Array2::<f64>::zeros((n, p));
    if let Some(map) = map {
        let x = model.evaluate(params, map.features)?;
        let d = map.rows.shape()[1];
        let mut design = Array2::<f64>::ones((n, d));
        design.slice_mut(ndarray::s![.., ..x.ncols()]).assign(&x);
        debug_assert_eq!(map.bias, d > x.ncols());
        for e in 0..p {
            let sigma = map.rows.index_axis(Axis(0), e);
            let projected = design.dot(&sigma);
            for i in 0..n {
                map_variance[[i, e]] = projected.row(i).dot(&design.row(i));
            }
        }
    }

    let mut std = Array2::<f64>::zeros((n, p));
    for i in 0..n {
        let sigma = covariance.covariance.index_axis(Axis(0), i);
        let jac = jacobian.index_axis(Axis(0), i);
        let projected = jac.dot(&sigma);
        for e in 0..p {
            std[[i, e]] = (projected.row(e).dot(&jac.row(e)) + map_variance[[i, e]]).sqrt();
        }
    }
    let full = full_covariance.then(|| {
        let mut out = Array3::<f64>::zeros((n, p, p));
        for (i, mut matrix) in out.axis_iter_mut(Axis(0)).enumerate() {
            let jac = jacobian.index_axis(Axis(0), i);
            matrix.assign(&sandwich(jac, covariance.covariance.index_axis(Axis(0), i)));
            for e in 0..p {
                matrix[[e, e]] += map_variance[[i, e]];
            }
        }
        out
    });
    Ok(PredictionUncertainty {
        mean,
        std,
        covariance: full,
    })
}

/// Returns J Σ Jᵀ.
fn sandwich(jacobian: ArrayView2<f64>, sigma: ArrayView2<f64>) -> Array2<f64> {
    jacobian.dot(&sigma).dot(&jacobian.t())
}
