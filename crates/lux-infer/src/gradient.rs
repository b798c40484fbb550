//! The loss and its gradient over the free parameters, by the fused Lux kernel or by
//! autodiff over the general graph.

use lux_dsl::{Dataset, Model, Params};
use ndarray::{Array2, ArrayD};

use crate::engine::Free;
use crate::error::FitError;
use crate::fused::FusedLux;

/// Gradient method of an engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GradientBackend {
    /// The fused kernel when the model has the Lux form, autodiff otherwise.
    #[default]
    Auto,
    /// Candle's reverse-mode autodiff over the general graph.
    Autodiff,
}

/// Loss over the free parameters and its gradient; fixed parts have zero gradient.
#[derive(Debug, Clone)]
pub struct Gradient {
    pub loss: f64,
    /// N×K.
    pub latents: Array2<f64>,
    /// Indexed like [`Model::params`], each of the parameter's shape.
    pub params: Vec<ArrayD<f64>>,
}

/// The function an engine minimizes: the model, its data and what is free.
pub struct Objective<'a> {
    model: &'a Model,
    data: &'a Dataset,
    free: Free,
    fused: Option<FusedLux>,
}

impl<'a> Objective<'a> {
    pub(crate) fn new(model: &'a Model, data: &'a Dataset, free: Free, backend: GradientBackend) -> Self {
        let fused = match backend {
            GradientBackend::Auto => FusedLux::detect(model),
            GradientBackend::Autodiff => None,
        };
        Self {
            model,
            data,
            free,
            fused,
        }
    }

    pub(crate) fn model(&self) -> &'a Model {
        self.model
    }

    pub(crate) fn free(&self) -> &Free {
        &self.free
    }

    /// Loss and gradient at `params`.
    pub(crate) fn loss_grad(&self, params: &Params) -> Result<Gradient, FitError> {
        match &self.fused {
            Some(fused) => Ok(fused.loss_grad(self.model, params, self.data, &self.free)),
            None => autodiff(self.model, params, self.data, &self.free),
        }
    }

    /// Largest absolute gradient element over the free parameters at `params`; NaN if
    /// any element is NaN, so that a NaN gradient never passes a tolerance test.
    ///
    /// For a parameter with a HalfNormal prior the element is `x ∂L/∂x`, the gradient
    /// with respect to `ln x`. It vanishes at an interior optimum and also at an optimum
    /// on the boundary x = 0, where ∂L/∂x itself stays positive.
    pub(crate) fn max_abs_grad(&self, grad: &Gradient, params: &Params) -> f64 {
        let fold = |m: f64, g: f64| if g.is_nan() || m.is_nan() { f64::NAN } else { m.max(g.abs()) };
        let mut max = 0.0f64;
        if self.free.latents {
            max = grad.latents.iter().fold(max, |m, &g| fold(m, g));
        }
        for (index, g) in grad.params.iter().enumerate() {
            if !self.free.params[index] {
                continue;
            }
            let node = &self.model.params()[index];
            if node.prior.is_positive() {
                let values = params.get(&node.name).expect("checked parameter");
                max = g.iter().zip(values.iter()).fold(max, |m, (&g, &x)| fold(m, g * x));
            } else {
                max = g.iter().fold(max, |m, &g| fold(m, g));
            }
        }
        max
    }
}

fn autodiff(model: &Model, params: &Params, data: &Dataset, free: &Free) -> Result<Gradient, FitError> {
    let is_fixed = |name: &str| free.is_fixed(model, name);
    let grad = model.loss_and_grad_with(params, data, !free.latents, &is_fixed)?;
    Ok(Gradient {
        loss: grad.loss,
        latents: grad.latents,
        params: model
            .params()
            .iter()
            .map(|node| {
                grad.params
                    .iter()
                    .find(|(name, _)| name == &node.name)
                    .map(|(_, g)| g.clone())
                    .unwrap_or_else(|| ArrayD::zeros(node.shape.as_slice()))
            })
            .collect(),
    })
}
