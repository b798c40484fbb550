//! Gradient of the loss by reverse-mode automatic differentiation (candle, CPU, f64).
//!
//! [`Model::loss_and_grad`] evaluates the same loss as [`Model::loss`] on a candle tape
//! and returns its gradient with respect to the latents and to every global parameter,
//! in the parameters' own (constrained) values. It works for any graph, whatever its
//! structure; engines that know a block is linear-Gaussian can do better in closed form.

use candle_core::{DType, Device, Tensor, Var};
use ndarray::{Array2, ArrayD, IxDyn};

use crate::data::{Dataset, OutputData};
use crate::error::DataError;
use crate::eval::poly_monomials;
use crate::graph::{Expr, Model};
use crate::params::Params;
use crate::prior::{Prior, half_ln_2pi};

/// The loss and its gradient at one point.
///
/// `latents` has the shape of [`Params::latents`] and `params` contains one entry per global
/// parameter, in the order of [`Model::params`], each with the parameter's shape.
/// Whatever was held fixed has a zero gradient.
#[derive(Debug, Clone, PartialEq)]
pub struct Gradient {
    /// The loss: [`Model::loss`], or [`crate::LossTerms::total_free`] when some values
    /// are held fixed.
    pub loss: f64,
    /// ∂loss/∂latents, N×K.
    pub latents: Array2<f64>,
    /// ∂loss/∂θ for every global parameter θ, by name.
    pub params: Vec<(String, ArrayD<f64>)>,
}

impl Gradient {
    /// Returns the gradient with respect to the global parameter `name`.
    pub fn param(&self, name: &str) -> Option<&ArrayD<f64>> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, g)| g)
    }
}

/// A value on the tape: tracked (a [`Var`]) when its gradient is wanted, a plain tensor
/// otherwise.
struct Leaf {
    tensor: Tensor,
    var: Option<Var>,
}

impl Leaf {
    fn new(values: &[f64], shape: &[usize], tracked: bool) -> candle_core::Result<Self> {
        let device = Device::Cpu;
        if tracked {
            let var = Var::from_slice(values, shape, &device)?;
            Ok(Self {
                tensor: var.as_tensor().clone(),
                var: Some(var),
            })
        } else {
            Ok(Self {
                tensor: Tensor::from_slice(values, shape, &device)?,
                var: None,
            })
        }
    }
}

impl Model {
    /// Computes the loss ([`Model::loss`]) and its gradient with respect to the latents
    /// and to every global parameter.
    ///
    /// A HalfNormal parameter below zero makes the loss +∞, as in [`Model::loss`]; its
    /// gradient is then that of the mirrored density, `x / scale²`, so a projected step
    /// still has a direction.
    pub fn loss_and_grad(&self, params: &Params, data: &Dataset) -> Result<Gradient, DataError> {
        self.loss_and_grad_with(params, data, false, &|_| false)
    }

    /// Computes the loss and gradient with some values held fixed: the latents when
    /// `latents_fixed`, and every global parameter for which `fixed` returns true.
    ///
    /// Fixed values are not tracked on the tape, their gradients are zero and their
    /// priors are left out of the loss, which is then [`crate::LossTerms::total_free`].
    pub fn loss_and_grad_with(
        &self,
        params: &Params,
        data: &Dataset,
        latents_fixed: bool,
        fixed: &dyn Fn(&str) -> bool,
    ) -> Result<Gradient, DataError> {
        self.check_params(params)?;
        self.check_data(params, data)?;
        let gradient = self
            .tape(params, data, latents_fixed, fixed)
            .expect("parameter and data shapes are checked before the tape is built");
        Ok(gradient)
    }

    fn tape(
        &self,
        params: &Params,
        data: &Dataset,
        latents_fixed: bool,
        fixed: &dyn Fn(&str) -> bool,
    ) -> candle_core::Result<Gradient> {
        let n = params.n_objects();

        // Leaves: the joint latent matrix and every global parameter.
        let latents = params.latents().as_standard_layout();
        let latent_leaf = Leaf::new(
            latents.as_slice().expect("standard layout"),
            &[n, self.latent_size()],
            !latents_fixed,
        )?;
        let mut param_leaves = Vec::with_capacity(self.params.len());
        for node in &self.params {
            let value = params
                .get(&node.name)
                .expect("checked parameter")
                .as_standard_layout();
            let values = value.as_slice().expect("standard layout");
            param_leaves.push(Leaf::new(values, &node.shape, !fixed(&node.name))?);
        }

        // Forward pass over the expressions that feed an output present in the data.
        let needed = self.needed_exprs(data);
        let mut values: Vec<Option<Tensor>> = Vec::with_capacity(self.exprs.len());
        for (index, (expr, _)) in self.exprs.iter().enumerate() {
            if !needed[index] {
                values.push(None);
                continue;
            }
            let input =
                |id: crate::graph::ExprId| values[id.0].as_ref().expect("inputs come first");
            let value = match expr {
                Expr::Latent(id) => {
                    let node = &self.latents[id.0];
                    latent_leaf.tensor.narrow(1, node.offset, node.size)?
                }
                Expr::Slice {
                    input: x,
                    start,
                    end,
                } => input(*x).narrow(1, *start, end - start)?,
                Expr::Concat(inputs) => {
                    let parts: Vec<&Tensor> = inputs.iter().map(|&e| input(e)).collect();
                    Tensor::cat(&parts, 1)?
                }
                Expr::Poly { input: x, degree } => poly_tensor(input(*x), *degree)?,
                Expr::Linear { matrix, input: x } => {
                    input(*x).matmul(&param_leaves[matrix.0].tensor.t()?)?
                }
                Expr::AddBias { input: x, bias } => {
                    input(*x).broadcast_add(&param_leaves[bias.0].tensor)?
                }
            };
            values.push(Some(value));
        }

        // The loss as taped scalars plus a constant that carries no gradient.
        let mut terms: Vec<Tensor> = Vec::new();
        let mut constant = 0.0;
        let mut out_of_support = false;

        for obs in &self.observes {
            let Some(out) = data.output(&obs.name) else {
                continue;
            };
            let mean = values[obs.mean.0].as_ref().expect("needed expression");
            let scatter = obs.scatter.map(|id| &param_leaves[id.0].tensor);
            let (term, c) = gaussian_nll_tensor(mean, out, scatter)?;
            terms.push(term);
            constant += c;
        }

        if !latents_fixed {
            for latent in &self.latents {
                // Latent priors are Normal or Flat (the builder rejects HalfNormal ones).
                let block = latent_leaf.tensor.narrow(1, latent.offset, latent.size)?;
                if let Some((term, c)) = prior_tensor(&latent.prior, &block)? {
                    terms.push(term);
                    constant += c;
                }
            }
        }
        for (node, leaf) in self.params.iter().zip(&param_leaves) {
            if fixed(&node.name) {
                continue;
            }
            if let Some((term, c)) = prior_tensor(&node.prior, &leaf.tensor)? {
                terms.push(term);
                constant += c;
                let value = params.get(&node.name).expect("checked parameter");
                out_of_support |= node.prior.is_positive() && value.iter().any(|&x| x < 0.0);
            }
        }

        // Backward pass.
        let mut total = terms[0].clone();
        for term in &terms[1..] {
            total = total.add(term)?;
        }
        let grads = total.backward()?;
        let mut loss = total.to_scalar::<f64>()? + constant;
        if out_of_support {
            loss = f64::INFINITY;
        }

        let gradient_of = |leaf: &Leaf, shape: &[usize]| -> candle_core::Result<ArrayD<f64>> {
            match leaf.var.as_ref().and_then(|v| grads.get(v.as_tensor())) {
                Some(g) => {
                    let flat = g.reshape(g.elem_count())?.to_vec1::<f64>()?;
                    Ok(ArrayD::from_shape_vec(IxDyn(shape), flat)
                        .expect("gradient has the leaf's shape"))
                }
                None => Ok(ArrayD::zeros(IxDyn(shape))),
            }
        };
        let latent_grad = gradient_of(&latent_leaf, &[n, self.latent_size()])?
            .into_dimensionality()
            .expect("latent gradient is a matrix");
        let mut param_grads = Vec::with_capacity(self.params.len());
        for (node, leaf) in self.params.iter().zip(&param_leaves) {
            param_grads.push((node.name.clone(), gradient_of(leaf, &node.shape)?));
        }

        Ok(Gradient {
            loss,
            latents: latent_grad,
            params: param_grads,
        })
    }

    /// Marks the expressions that feed an output present in `data`.
    fn needed_exprs(&self, data: &Dataset) -> Vec<bool> {
        let mut needed = vec![false; self.exprs.len()];
        for obs in &self.observes {
            if data.output(&obs.name).is_some() {
                needed[obs.mean.0] = true;
            }
        }
        for index in (0..self.exprs.len()).rev() {
            if !needed[index] {
                continue;
            }
            match &self.exprs[index].0 {
                Expr::Latent(_) => {}
                Expr::Slice { input, .. }
                | Expr::Poly { input, .. }
                | Expr::Linear { input, .. }
                | Expr::AddBias { input, .. } => needed[input.0] = true,
                Expr::Concat(inputs) => inputs.iter().for_each(|e| needed[e.0] = true),
            }
        }
        needed
    }
}

/// Builds the polynomial features of each row of `x` (see [`Expr::Poly`]) from the
/// columns of `x`, so that gradients flow back to them.
///
/// Each monomial of degree d is the monomial of its first d − 1 indices times one more
/// column, in the same order of multiplication as [`crate::poly_features`].
fn poly_tensor(x: &Tensor, degree: u32) -> candle_core::Result<Tensor> {
    let (n, size) = x.dims2()?;
    let columns: Vec<Tensor> = (0..size)
        .map(|i| x.narrow(1, i, 1))
        .collect::<Result<_, _>>()?;
    let monomials = poly_monomials(size, degree);
    let mut features: Vec<Tensor> = Vec::with_capacity(monomials.len());
    let mut by_monomial = std::collections::HashMap::with_capacity(monomials.len());
    for mono in &monomials {
        let feature = match mono.split_last() {
            None => Tensor::ones((n, 1), DType::F64, x.device())?,
            Some((&last, [])) => columns[last].clone(),
            Some((&last, prefix)) => {
                let head: &Tensor = by_monomial
                    .get(prefix)
                    .expect("graded order lists prefixes first");
                head.mul(&columns[last])?
            }
        };
        by_monomial.insert(mono.as_slice(), feature.clone());
        features.push(feature);
    }
    Tensor::cat(&features, 1)
}

/// Computes ½ Σ [r²/v + ln(2π v)] over the observed elements of one output, split into
/// a taped scalar and a constant.
///
/// Without scatter `v = 1/w` does not depend on the parameters, so Σ ln v goes to the
/// constant. With scatter `v = 1/w + s²`: where `w = 0` the inverse is replaced by 1 so
/// that `v` stays finite, and the mask drops those elements.
fn gaussian_nll_tensor(
    mean: &Tensor,
    out: &OutputData,
    scatter: Option<&Tensor>,
) -> candle_core::Result<(Tensor, f64)> {
    let device = mean.device();
    let shape = mean.dims().to_vec();
    let ivar = out.ivar().as_standard_layout();
    let ivar = ivar.as_slice().expect("standard layout");
    let y = out.values().as_standard_layout();
    let y = Tensor::from_slice(
        y.as_slice().expect("standard layout"),
        shape.as_slice(),
        device,
    )?;
    let mut constant = out.n_observed() as f64 * half_ln_2pi();

    let r2 = y.sub(mean)?.sqr()?;
    let term = match scatter {
        None => {
            constant -= 0.5 * out.log_ivar_sum();
            let w = Tensor::from_slice(ivar, shape.as_slice(), device)?;
            r2.mul(&w)?.sum_all()?
        }
        Some(s) => {
            let inverse: Vec<f64> = ivar
                .iter()
                .map(|&w| if w > 0.0 { 1.0 / w } else { 1.0 })
                .collect();
            let mask: Vec<f64> = ivar
                .iter()
                .map(|&w| if w > 0.0 { 1.0 } else { 0.0 })
                .collect();
            let inverse = Tensor::from_vec(inverse, shape.as_slice(), device)?;
            let mask = Tensor::from_vec(mask, shape.as_slice(), device)?;
            let v = inverse.add(&s.sqr()?.broadcast_as(shape.as_slice())?)?;
            r2.div(&v)?.add(&v.log()?)?.mul(&mask)?.sum_all()?
        }
    };
    Ok((term.affine(0.5, 0.0)?, constant))
}

/// Computes the negative log prior summed over `x`, split into a taped scalar and a
/// constant, or `None` for a flat prior. A HalfNormal prior is taken on its support (x ≥ 0).
fn prior_tensor(prior: &Prior, x: &Tensor) -> candle_core::Result<Option<(Tensor, f64)>> {
    let count = x.elem_count() as f64;
    let (mean, scale, constant) = match *prior {
        Prior::Flat => return Ok(None),
        Prior::Normal { mean, scale } => (mean, scale, scale.ln() + half_ln_2pi()),
        Prior::HalfNormal { scale } => (
            0.0,
            scale,
            scale.ln() + half_ln_2pi() - std::f64::consts::LN_2,
        ),
    };
    let u = x.affine(1.0, -mean)?.affine(1.0 / scale, 0.0)?;
    let term = u.sqr()?.sum_all()?.affine(0.5, 0.0)?;
    Ok(Some((term, count * constant)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{SeedableRng, rngs::StdRng};
    use rand_distr::{Distribution, StandardNormal};

    fn normal_matrix(rng: &mut StdRng, rows: usize, cols: usize) -> Array2<f64> {
        Array2::from_shape_simple_fn((rows, cols), || StandardNormal.sample(rng))
    }

    /// Builds a data set with random values and errors in [0.5, 1.5) for each named output.
    fn random_data(rng: &mut StdRng, n: usize, outputs: &[(&str, usize)]) -> Dataset {
        let mut data = Dataset::new();
        for &(name, size) in outputs {
            let values = normal_matrix(rng, n, size);
            let errors = normal_matrix(rng, n, size).mapv(|u: f64| 0.5 + u.tanh().abs());
            data = data.with_errors(name, values, errors).unwrap();
        }
        data
    }

    /// Draws values from the priors, with every HalfNormal parameter moved 0.3 away
    /// from zero so that finite differences stay on its support.
    fn sample(model: &Model, n: usize, seed: u64) -> Params {
        let mut params = model.sample_params(n, seed);
        for node in model.params() {
            if node.prior.is_positive() {
                params
                    .get_mut(&node.name)
                    .unwrap()
                    .mapv_inplace(|x| 0.3 + x);
            }
        }
        params
    }

    /// Checks the loss against `Model::loss` and the gradient against central finite
    /// differences of `Model::loss`, element by element (relative 1e-6, absolute below 1).
    fn check(model: &Model, params: &Params, data: &Dataset) {
        let gradient = model.loss_and_grad(params, data).unwrap();
        let loss = model.loss(params, data).unwrap();
        assert!(
            (gradient.loss - loss).abs() <= 1e-12 * loss.abs(),
            "loss {} vs {loss}",
            gradient.loss
        );

        let h = 1e-5;
        let close = |analytic: f64, numeric: f64, what: &str| {
            let tolerance = 1e-6 * numeric.abs().max(1.0);
            assert!(
                (analytic - numeric).abs() <= tolerance,
                "{what}: autodiff {analytic} vs finite difference {numeric}"
            );
        };
        for ((i, j), &g) in gradient.latents.indexed_iter() {
            let mut plus = params.clone();
            plus.latents_mut()[[i, j]] += h;
            let mut minus = params.clone();
            minus.latents_mut()[[i, j]] -= h;
            let numeric =
                (model.loss(&plus, data).unwrap() - model.loss(&minus, data).unwrap()) / (2.0 * h);
            close(g, numeric, &format!("latents[{i}, {j}]"));
        }
        for (name, grad) in &gradient.params {
            for (index, &g) in grad.iter().enumerate() {
                let mut plus = params.clone();
                plus.get_mut(name).unwrap().as_slice_mut().unwrap()[index] += h;
                let mut minus = params.clone();
                minus.get_mut(name).unwrap().as_slice_mut().unwrap()[index] -= h;
                let numeric = (model.loss(&plus, data).unwrap()
                    - model.loss(&minus, data).unwrap())
                    / (2.0 * h);
                close(g, numeric, &format!("{name}[{index}]"));
            }
        }
    }

    fn lux_model(k: usize, l: usize, p: usize) -> Model {
        let mut b = Model::builder();
        let z = b.latent("z", k, Prior::standard_normal()).unwrap();
        let a = b.param("A", &[l, k], Prior::standard_normal()).unwrap();
        let bm = b.param("B", &[p, k], Prior::normal(0.1, 0.7)).unwrap();
        let label = b.linear(a, z).unwrap();
        let flux = b.linear(bm, z).unwrap();
        b.observe("label", label, None).unwrap();
        b.observe("flux", flux, None).unwrap();
        b.build().unwrap()
    }

    #[test]
    fn grad_lux_linear() {
        let model = lux_model(3, 2, 4);
        let mut rng = StdRng::seed_from_u64(1);
        let data = random_data(&mut rng, 5, &[("label", 2), ("flux", 4)]);
        check(&model, &sample(&model, 5, 2), &data);
    }

    #[test]
    fn grad_affine_with_bias() {
        let mut b = Model::builder();
        let z = b.latent("z", 3, Prior::normal(0.5, 2.0)).unwrap();
        let a = b.param("A", &[4, 3], Prior::standard_normal()).unwrap();
        let bias = b.param("b", &[4], Prior::normal(-1.0, 3.0)).unwrap();
        let mean = b.affine(a, z, bias).unwrap();
        b.observe("flux", mean, None).unwrap();
        let model = b.build().unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        let data = random_data(&mut rng, 5, &[("flux", 4)]);
        check(&model, &sample(&model, 5, 4), &data);
    }

    #[test]
    fn grad_slices_feed_two_maps() {
        let mut b = Model::builder();
        let z = b.latent("z", 4, Prior::standard_normal()).unwrap();
        let head = b.slice(z, 0, 2).unwrap();
        let tail = b.slice(z, 1, 4).unwrap();
        let a = b.param("A", &[2, 2], Prior::standard_normal()).unwrap();
        let bm = b.param("B", &[4, 3], Prior::standard_normal()).unwrap();
        let label = b.linear(a, head).unwrap();
        let flux = b.linear(bm, tail).unwrap();
        b.observe("label", label, None).unwrap();
        b.observe("flux", flux, None).unwrap();
        let model = b.build().unwrap();
        let mut rng = StdRng::seed_from_u64(5);
        let data = random_data(&mut rng, 5, &[("label", 2), ("flux", 4)]);
        check(&model, &sample(&model, 5, 6), &data);
    }

    #[test]
    fn grad_concat_of_two_branches() {
        let mut b = Model::builder();
        let z = b.latent("z", 3, Prior::standard_normal()).unwrap();
        let w = b.latent("w", 2, Prior::normal(0.0, 0.5)).unwrap();
        let a = b.param("A", &[2, 3], Prior::standard_normal()).unwrap();
        let c = b.param("C", &[3, 2], Prior::standard_normal()).unwrap();
        let left = b.linear(a, z).unwrap();
        let right = b.linear(c, w).unwrap();
        let both = b.concat(&[left, right, z]).unwrap();
        b.observe("flux", both, None).unwrap();
        let model = b.build().unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        let data = random_data(&mut rng, 5, &[("flux", 8)]);
        check(&model, &sample(&model, 5, 8), &data);
    }

    /// The Cannon: labels observed through the identity with a flat prior, flux a
    /// linear map of quadratic features of them, with per-pixel scatter.
    #[test]
    fn grad_cannon_poly() {
        let mut b = Model::builder();
        let y = b.latent("y", 3, Prior::Flat).unwrap();
        let features = b.poly(y, 2).unwrap();
        let theta = b.param("theta", &[4, 10], Prior::Flat).unwrap();
        let s = b.param("s", &[4], Prior::half_normal(1.0)).unwrap();
        let flux = b.linear(theta, features).unwrap();
        b.observe("label", y, None).unwrap();
        b.observe("flux", flux, Some(s)).unwrap();
        let model = b.build().unwrap();
        let mut rng = StdRng::seed_from_u64(9);
        let data = random_data(&mut rng, 5, &[("label", 3), ("flux", 4)]);
        let mut params = sample(&model, 5, 10);
        params.get_mut("theta").unwrap().mapv_inplace(|x| 0.3 * x);
        check(&model, &params, &data);
    }

    #[test]
    fn grad_poly_degree_three() {
        let mut b = Model::builder();
        let z = b.latent("z", 2, Prior::standard_normal()).unwrap();
        let features = b.poly(z, 3).unwrap();
        let a = b.param("A", &[3, 10], Prior::normal(0.0, 0.5)).unwrap();
        let mean = b.linear(a, features).unwrap();
        b.observe("flux", mean, None).unwrap();
        let model = b.build().unwrap();
        let mut rng = StdRng::seed_from_u64(11);
        let data = random_data(&mut rng, 5, &[("flux", 3)]);
        check(&model, &sample(&model, 5, 12), &data);
    }

    fn scatter_model(shape: &[usize]) -> Model {
        let mut b = Model::builder();
        let z = b.latent("z", 3, Prior::standard_normal()).unwrap();
        let a = b.param("A", &[2, 3], Prior::standard_normal()).unwrap();
        let bm = b.param("B", &[4, 3], Prior::standard_normal()).unwrap();
        let s = b.param("s", shape, Prior::half_normal(0.5)).unwrap();
        let label = b.linear(a, z).unwrap();
        let flux = b.linear(bm, z).unwrap();
        b.observe("label", label, None).unwrap();
        b.observe("flux", flux, Some(s)).unwrap();
        b.build().unwrap()
    }

    #[test]
    fn grad_scatter_per_element() {
        let model = scatter_model(&[4]);
        let mut rng = StdRng::seed_from_u64(13);
        let data = random_data(&mut rng, 5, &[("label", 2), ("flux", 4)]);
        check(&model, &sample(&model, 5, 14), &data);
    }

    #[test]
    fn grad_scatter_scalar() {
        let model = scatter_model(&[]);
        let mut rng = StdRng::seed_from_u64(15);
        let data = random_data(&mut rng, 5, &[("label", 2), ("flux", 4)]);
        check(&model, &sample(&model, 5, 16), &data);
    }

    /// NaN values and zero inverse variances, with and without scatter.
    #[test]
    fn grad_missing_elements() {
        let model = scatter_model(&[4]);
        let mut rng = StdRng::seed_from_u64(17);
        let mut labels = normal_matrix(&mut rng, 5, 2);
        labels[[0, 1]] = f64::NAN;
        labels[[3, 0]] = f64::NAN;
        let mut flux = normal_matrix(&mut rng, 5, 4);
        flux[[2, 3]] = f64::NAN;
        let mut ivar = normal_matrix(&mut rng, 5, 4).mapv(|u: f64| 1.0 + u * u);
        ivar[[1, 0]] = 0.0;
        ivar.row_mut(4).fill(0.0);
        let data = Dataset::new()
            .with_errors("label", labels, Array2::from_elem((5, 2), 0.3))
            .unwrap()
            .with_ivar("flux", flux, ivar)
            .unwrap();
        let params = sample(&model, 5, 18);
        let gradient = model.loss_and_grad(&params, &data).unwrap();
        assert!(gradient.loss.is_finite());
        assert!(gradient.latents.iter().all(|g| g.is_finite()));
        check(&model, &params, &data);
    }

    /// A test set with flux only: the label map gets only its prior gradient.
    #[test]
    fn grad_absent_output() {
        let model = scatter_model(&[]);
        let mut rng = StdRng::seed_from_u64(19);
        let data = random_data(&mut rng, 5, &[("flux", 4)]);
        let params = sample(&model, 5, 20);
        check(&model, &params, &data);
        let gradient = model.loss_and_grad(&params, &data).unwrap();
        let a = params.get("A").unwrap();
        assert!(
            (gradient.param("A").unwrap() - a)
                .iter()
                .all(|d| d.abs() < 1e-14)
        );
    }

    #[test]
    fn grad_fixed_values_excluded() {
        let model = scatter_model(&[4]);
        let mut rng = StdRng::seed_from_u64(21);
        let data = random_data(&mut rng, 5, &[("label", 2), ("flux", 4)]);
        let params = sample(&model, 5, 22);
        let is_fixed = |name: &str| name == "B" || name == "s";
        let full = model.loss_and_grad(&params, &data).unwrap();

        let latents_step = model
            .loss_and_grad_with(&params, &data, false, &is_fixed)
            .unwrap();
        let expected = model
            .loss_terms(&params, &data)
            .unwrap()
            .total_free(false, is_fixed);
        assert!((latents_step.loss - expected).abs() <= 1e-12 * expected.abs());
        assert!(latents_step.param("B").unwrap().iter().all(|&g| g == 0.0));
        assert!(latents_step.param("s").unwrap().iter().all(|&g| g == 0.0));
        assert!(
            (&latents_step.latents - &full.latents)
                .iter()
                .all(|d| d.abs() < 1e-12)
        );
        assert!(
            (latents_step.param("A").unwrap() - full.param("A").unwrap())
                .iter()
                .all(|d| d.abs() < 1e-12)
        );

        let params_step = model
            .loss_and_grad_with(&params, &data, true, &|_| false)
            .unwrap();
        let expected = model
            .loss_terms(&params, &data)
            .unwrap()
            .total_free(true, |_| false);
        assert!((params_step.loss - expected).abs() <= 1e-12 * expected.abs());
        assert!(params_step.latents.iter().all(|&g| g == 0.0));
        assert!(
            (params_step.param("B").unwrap() - full.param("B").unwrap())
                .iter()
                .all(|d| d.abs() < 1e-12)
        );
    }

    #[test]
    fn grad_negative_scatter_infinite() {
        let model = scatter_model(&[]);
        let mut rng = StdRng::seed_from_u64(23);
        let data = random_data(&mut rng, 5, &[("label", 2), ("flux", 4)]);
        let mut params = sample(&model, 5, 24);
        params.insert("s", ArrayD::from_elem(IxDyn(&[]), -0.2));
        assert_eq!(model.loss(&params, &data).unwrap(), f64::INFINITY);
        let gradient = model.loss_and_grad(&params, &data).unwrap();
        assert_eq!(gradient.loss, f64::INFINITY);
        assert!(gradient.param("s").unwrap().iter().all(|g| g.is_finite()));
    }

    /// Time of one loss and gradient at tutorial size (N = 1024, K = 8, outputs of
    /// size 2 and 128). Run with `cargo test --release -p lux-dsl -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn grad_timing_tutorial_size() {
        let model = lux_model(8, 2, 128);
        let mut rng = StdRng::seed_from_u64(25);
        let data = random_data(&mut rng, 1024, &[("label", 2), ("flux", 128)]);
        let params = sample(&model, 1024, 26);
        model.loss_and_grad(&params, &data).unwrap();
        let repeats = 200;
        let start = std::time::Instant::now();
        for _ in 0..repeats {
            std::hint::black_box(model.loss_and_grad(&params, &data).unwrap());
        }
        let autodiff = start.elapsed() / repeats;
        let start = std::time::Instant::now();
        for _ in 0..repeats {
            std::hint::black_box(model.loss(&params, &data).unwrap());
        }
        let loss_only = start.elapsed() / repeats;
        println!("loss_and_grad: {autodiff:?} per call; Model::loss alone: {loss_only:?}");
    }
}
