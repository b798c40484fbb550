//! Forward evaluation of the graph, predictions and the loss.
//!
//! The loss every engine minimizes and reports is the negative log posterior
//!
//! ```text
//! L = Σ_observed ½ [ r²/v + ln(2π v) ]  −  Σ ln p(latents)  −  Σ ln p(free parameters)
//! ```
//!
//! with `r = y − mean`, `v = σ² + s²` (reported error and intrinsic scatter), every
//! normalizing constant included, so losses from different engines compare number for
//! number.

use std::collections::BTreeMap;

use ndarray::{Array2, ArrayView2, Axis, Ix1, Ix2, s};

use crate::data::{Dataset, OutputData};
use crate::error::DataError;
use crate::graph::{Expr, ExprId, Model, ObserveNode};
use crate::params::Params;
use crate::prior::half_ln_2pi;

/// Loss split by term, each a negative log density.
#[derive(Debug, Clone, PartialEq)]
pub struct LossTerms {
    /// Gaussian likelihood of each output present in the data, by output name.
    pub data: BTreeMap<String, f64>,
    /// Prior of the latents, over all objects.
    pub latent_prior: f64,
    /// Prior of each global parameter, by name.
    pub param_prior: BTreeMap<String, f64>,
}

impl LossTerms {
    /// Sum of every term: all parameters free.
    pub fn total(&self) -> f64 {
        self.data.values().sum::<f64>() + self.latent_prior + self.param_prior.values().sum::<f64>()
    }

    /// Sum of the terms for free parameters: the priors of the parameters for which
    /// `is_fixed` is true are left out, and so is the latent prior when `latents_fixed`.
    pub fn total_free(&self, latents_fixed: bool, is_fixed: impl Fn(&str) -> bool) -> f64 {
        let mut total: f64 = self.data.values().sum();
        if !latents_fixed {
            total += self.latent_prior;
        }
        for (name, value) in &self.param_prior {
            if !is_fixed(name) {
                total += value;
            }
        }
        total
    }
}

/// Lists the monomials of [`Expr::Poly`] as lists of variable indices, in feature order:
/// `[]` is the constant, `[0, 1]` the product of elements 0 and 1.
pub fn poly_monomials(n: usize, degree: u32) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new()];
    let mut previous: Vec<Vec<usize>> = vec![Vec::new()];
    for _ in 0..degree {
        let mut next = Vec::new();
        for mono in &previous {
            let first = mono.last().copied().unwrap_or(0);
            for i in first..n {
                let mut m = mono.clone();
                m.push(i);
                next.push(m);
            }
        }
        out.extend(next.iter().cloned());
        previous = next;
    }
    out
}

impl Model {
    /// Evaluates every expression for every object: entry `i` is expression `i` as an
    /// N×size matrix.
    pub fn forward(&self, params: &Params) -> Result<Vec<Array2<f64>>, DataError> {
        self.check_params(params)?;
        Ok(self.forward_unchecked(params))
    }

    pub(crate) fn forward_unchecked(&self, params: &Params) -> Vec<Array2<f64>> {
        let all: Vec<ExprId> = (0..self.exprs.len()).map(ExprId).collect();
        self.forward_needed(params, &all)
    }

    /// Evaluates `targets` and the expressions they depend on; the others are left empty.
    fn forward_needed(&self, params: &Params, targets: &[ExprId]) -> Vec<Array2<f64>> {
        let mut needed = vec![false; self.exprs.len()];
        let mut stack: Vec<ExprId> = targets.to_vec();
        while let Some(id) = stack.pop() {
            if std::mem::replace(&mut needed[id.0], true) {
                continue;
            }
            match self.expr(id) {
                Expr::Latent(_) => {}
                Expr::Slice { input, .. }
                | Expr::Poly { input, .. }
                | Expr::Linear { input, .. }
                | Expr::AddBias { input, .. } => stack.push(*input),
                Expr::Concat(inputs) => stack.extend(inputs.iter().copied()),
            }
        }

        let mut values: Vec<Array2<f64>> = Vec::with_capacity(self.exprs.len());
        for (index, (expr, _)) in self.exprs.iter().enumerate() {
            if !needed[index] {
                values.push(Array2::zeros((0, 0)));
                continue;
            }
            let value = match expr {
                Expr::Latent(id) => {
                    let node = &self.latents[id.0];
                    params.latents().slice(s![.., node.offset..node.offset + node.size]).to_owned()
                }
                Expr::Slice { input, start, end } => values[input.0].slice(s![.., *start..*end]).to_owned(),
                Expr::Concat(inputs) => {
                    let views: Vec<ArrayView2<f64>> = inputs.iter().map(|e| values[e.0].view()).collect();
                    ndarray::concatenate(Axis(1), &views).expect("concatenated inputs have N rows")
                }
                Expr::Poly { input, degree } => poly_features(values[input.0].view(), *degree),
                Expr::Linear { matrix, input } => {
                    let a = self.matrix_value(params, matrix.0);
                    values[input.0].dot(&a.t())
                }
                Expr::AddBias { input, bias } => {
                    let b = params
                        .get(&self.params[bias.0].name)
                        .expect("checked parameter")
                        .view()
                        .into_dimensionality::<Ix1>()
                        .expect("bias is a vector");
                    &values[input.0] + &b
                }
            };
            values.push(value);
        }
        values
    }

    fn matrix_value<'a>(&self, params: &'a Params, index: usize) -> ArrayView2<'a, f64> {
        params
            .get(&self.params[index].name)
            .expect("checked parameter")
            .view()
            .into_dimensionality::<Ix2>()
            .expect("linear map is a matrix")
    }

    /// Predicted mean of every output (N×P each, in the units the model was fitted in).
    pub fn predict(&self, params: &Params) -> Result<BTreeMap<String, Array2<f64>>, DataError> {
        let values = self.forward(params)?;
        Ok(self
            .observes
            .iter()
            .map(|obs| (obs.name.clone(), values[obs.mean.0].clone()))
            .collect())
    }

    /// Checks that each output of `data` that the model observes has the model's size
    /// and that the latents have one row per object.
    pub fn check_data(&self, params: &Params, data: &Dataset) -> Result<(), DataError> {
        if data.n_objects() == 0 {
            return Err(DataError::Empty {
                what: "it has no objects; give at least one row".to_string(),
            });
        }
        if params.n_objects() != data.n_objects() {
            return Err(DataError::LatentShape {
                found: params.latents().shape().to_vec(),
                expected: vec![data.n_objects(), self.latent_size()],
                hint: format!(
                    "the data set has {} objects and the latents need one row per object",
                    data.n_objects()
                ),
            });
        }
        let mut any = false;
        for obs in &self.observes {
            if let Some(out) = data.output(&obs.name) {
                any = true;
                if out.size() != obs.size {
                    return Err(DataError::Shape {
                        output: obs.name.clone(),
                        what: "values",
                        found: out.values().shape().to_vec(),
                        expected: vec![out.n_objects(), obs.size],
                        hint: "the model was built with a different size for this output; build the model with the data's size, or select the columns it was built for",
                    });
                }
            }
        }
        let names: Vec<&str> = self.observes.iter().map(|o| o.name.as_str()).collect();
        if let Some(unknown) = data.names().find(|name| !names.contains(name)) {
            return Err(DataError::NotAnOutput {
                name: unknown.to_string(),
                outputs: names.join(", "),
            });
        }
        if !any {
            return Err(DataError::Empty {
                what: format!("it has none of the model's outputs ({})", names.join(", ")),
            });
        }
        Ok(())
    }

    /// Computes the loss split into its terms.
    pub fn loss_terms(&self, params: &Params, data: &Dataset) -> Result<LossTerms, DataError> {
        self.check_params(params)?;
        self.check_data(params, data)?;
        let present: Vec<ExprId> = self
            .observes
            .iter()
            .filter(|o| data.output(&o.name).is_some())
            .map(|o| o.mean)
            .collect();
        let values = self.forward_needed(params, &present);

        let mut terms = LossTerms {
            data: BTreeMap::new(),
            latent_prior: 0.0,
            param_prior: BTreeMap::new(),
        };
        for obs in &self.observes {
            if let Some(out) = data.output(&obs.name) {
                let scatter = self.scatter_values(params, obs);
                let value = gaussian_nll(values[obs.mean.0].view(), out, scatter.as_deref());
                terms.data.insert(obs.name.clone(), value);
            }
        }
        for latent in &self.latents {
            let block = params.latents().slice(s![.., latent.offset..latent.offset + latent.size]);
            terms.latent_prior += latent.prior.neg_log_density_sum(block.iter().copied());
        }
        for node in &self.params {
            let value = params.get(&node.name).expect("checked parameter");
            terms
                .param_prior
                .insert(node.name.clone(), node.prior.neg_log_density_sum(value.iter().copied()));
        }
        Ok(terms)
    }

    /// Computes the loss with every parameter free (the full negative log posterior).
    pub fn loss(&self, params: &Params, data: &Dataset) -> Result<f64, DataError> {
        Ok(self.loss_terms(params, data)?.total())
    }

    /// Per-element intrinsic scatter of `obs` (length P), or `None` without scatter.
    pub fn scatter_values(&self, params: &Params, obs: &ObserveNode) -> Option<Vec<f64>> {
        let id = obs.scatter?;
        let value = params.get(&self.params[id.0].name).expect("checked parameter");
        Some(if value.ndim() == 0 {
            vec![value.iter().next().copied().unwrap_or(0.0); obs.size]
        } else {
            value.iter().copied().collect()
        })
    }

    /// Evaluates expression `id` alone.
    pub fn evaluate(&self, params: &Params, id: ExprId) -> Result<Array2<f64>, DataError> {
        self.check_params(params)?;
        let mut values = self.forward_needed(params, &[id]);
        Ok(std::mem::take(&mut values[id.0]))
    }
}

/// Polynomial features (see [`Expr::Poly`]) of each row of `x`.
pub fn poly_features(x: ArrayView2<f64>, degree: u32) -> Array2<f64> {
    let monomials = poly_monomials(x.ncols(), degree);
    let mut out = Array2::zeros((x.nrows(), monomials.len()));
    for (mut row, xr) in out.rows_mut().into_iter().zip(x.rows()) {
        for (j, mono) in monomials.iter().enumerate() {
            row[j] = mono.iter().map(|&i| xr[i]).product();
        }
    }
    out
}

/// ½ Σ [r²/v + ln(2π v)] over the observed elements of one output.
fn gaussian_nll(mean: ArrayView2<f64>, out: &OutputData, scatter: Option<&[f64]>) -> f64 {
    let mut total = 0.0;
    for ((m, y), w) in mean.rows().into_iter().zip(out.values().rows()).zip(out.ivar().rows()) {
        for p in 0..m.len() {
            let w = w[p];
            if w <= 0.0 {
                continue;
            }
            let r = y[p] - m[p];
            match scatter {
                None => total += r * r * w,
                Some(s) => {
                    let v = 1.0 / w + s[p] * s[p];
                    total += r * r / v + v.ln();
                }
            }
        }
    }
    // Without scatter ln v = −ln w, summed once when the data were built.
    if scatter.is_none() {
        total -= out.log_ivar_sum();
    }
    0.5 * total + out.n_observed() as f64 * half_ln_2pi()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Model;
    use crate::prior::Prior;
    use ndarray::{ArrayD, IxDyn, array};

    #[test]
    fn monomials_in_graded_order() {
        let m = poly_monomials(2, 2);
        assert_eq!(m, vec![vec![], vec![0], vec![1], vec![0, 0], vec![0, 1], vec![1, 1]]);
        let features = poly_features(array![[2.0, 3.0]].view(), 2);
        assert_eq!(features, array![[1.0, 2.0, 3.0, 4.0, 6.0, 9.0]]);
    }

    #[test]
    fn loss_of_one_element_matches_closed_form() {
        // One object, one latent, y = a z observed with σ = 0.5 and scatter s = 0.3.
        let mut b = Model::builder();
        let z = b.latent("z", 1, Prior::standard_normal()).unwrap();
        let a = b.param("a", &[1, 1], Prior::normal(0.0, 2.0)).unwrap();
        let s = b.param("s", &[1], Prior::half_normal(1.0)).unwrap();
        let mean = b.linear(a, z).unwrap();
        b.observe("y", mean, Some(s)).unwrap();
        let model = b.build().unwrap();

        let params = Params::new(array![[0.7]])
            .with("a", ArrayD::from_shape_vec(IxDyn(&[1, 1]), vec![1.5]).unwrap())
            .with("s", ArrayD::from_shape_vec(IxDyn(&[1]), vec![0.3]).unwrap());
        let data = Dataset::new().with_errors("y", array![[2.0]], array![[0.5]]).unwrap();

        let v: f64 = 0.25 + 0.09;
        let r: f64 = 2.0 - 1.05;
        let ln2pi = (2.0 * std::f64::consts::PI).ln();
        let expected = 0.5 * (r * r / v + (v).ln() + ln2pi)
            + 0.5 * 0.49 + 0.5 * ln2pi
            + 0.5 * (1.5f64 / 2.0).powi(2) + 2f64.ln() + 0.5 * ln2pi
            + 0.5 * 0.09 + 0.5 * ln2pi - 2f64.ln();
        let loss = model.loss(&params, &data).unwrap();
        assert!((loss - expected).abs() < 1e-12, "{loss} vs {expected}");
    }

    #[test]
    fn missing_output_is_skipped_and_wrong_size_rejected() {
        let mut b = Model::builder();
        let z = b.latent("z", 2, Prior::standard_normal()).unwrap();
        b.observe("label", z, None).unwrap();
        let model = b.build().unwrap();
        let params = Params::new(Array2::zeros((1, 2)));
        let wrong = Dataset::new().with_errors("label", array![[1.0, 2.0, 3.0]], array![[1.0, 1.0, 1.0]]).unwrap();
        let err = model.loss(&params, &wrong).unwrap_err().to_string();
        assert!(err.contains("label"), "{err}");
        assert!(err.contains("[1, 3]"), "{err}");
        assert!(err.contains("[1, 2]"), "{err}");
    }
}
