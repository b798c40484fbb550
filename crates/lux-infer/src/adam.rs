//! MAP by Adam (Kingma & Ba 2015, "Adam: A Method for Stochastic Optimization").
//!
//! Parameters with a HalfNormal prior are stepped in log space so they stay positive.
//! The loss is still the posterior density of the parameters themselves, with no
//! Jacobian term, so the optimum is the MAP estimate in the model's own coordinates.

use std::time::Instant;

use lux_dsl::{Dataset, Model, Params};

use crate::engine::{BlockMethod, BlockReport, Engine, Fit, FitOptions, FitStatus, Free, check_coverage};
use crate::error::FitError;
use crate::gradient::{Gradient, GradientBackend, Objective};

/// The Adam engine: every free parameter moves together by gradient steps.
///
/// Without a starting point in [`FitOptions::init`] it starts near the prior centers
/// (see [`Adam::init_spread`]; seeded by [`FitOptions::seed`]).
#[derive(Debug, Clone)]
pub struct Adam {
    /// Step size (1e-3 by default).
    pub learning_rate: f64,
    /// Number of steps (10,000 by default).
    pub steps: usize,
    /// Decay of the first-moment estimate (0.9).
    pub beta1: f64,
    /// Decay of the second-moment estimate (0.999).
    pub beta2: f64,
    /// Added to the root of the second moment (1e-8).
    pub epsilon: f64,
    /// `converged` is set when the largest absolute gradient element at the end is
    /// at most this.
    pub grad_tol: f64,
    /// Gradient method.
    pub backend: GradientBackend,
    /// Without [`FitOptions::init`], the start is a prior draw pulled toward the prior
    /// centers by this factor (0.1). From a full draw the products of unit-scale latents
    /// and maps make the first steps huge and Adam's bounded steps take far longer.
    pub init_spread: f64,
}

impl Default for Adam {
    fn default() -> Self {
        Self {
            learning_rate: 1e-3,
            steps: 10_000,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            grad_tol: 1e-2,
            backend: GradientBackend::Auto,
            init_spread: 0.1,
        }
    }
}

impl Adam {
    /// Adam with the given learning rate and number of steps, other settings default.
    pub fn new(learning_rate: f64, steps: usize) -> Self {
        Self {
            learning_rate,
            steps,
            ..Self::default()
        }
    }

    fn validate(&self) -> Result<(), FitError> {
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(FitError::InvalidSetting {
                setting: "learning_rate",
                value: self.learning_rate.to_string(),
                reason: "give a finite learning rate > 0",
            });
        }
        if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            return Err(FitError::InvalidSetting {
                setting: "epsilon",
                value: self.epsilon.to_string(),
                reason: "give a finite epsilon > 0; without it a zero gradient element divides 0 by 0",
            });
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return Err(FitError::InvalidSetting {
                setting: "beta1/beta2",
                value: format!("{}/{}", self.beta1, self.beta2),
                reason: "moment decays must be in [0, 1)",
            });
        }
        Ok(())
    }
}

impl Engine for Adam {
    fn name(&self) -> &'static str {
        "adam"
    }

    fn fit(&self, model: &Model, data: &Dataset, options: &FitOptions) -> Result<Fit, FitError> {
        let started = Instant::now();
        self.validate()?;
        let mut params = options.start(model, data, self.init_spread)?;
        let free = options.free(model)?;
        let coverage = model.coverage(data);
        check_coverage(model, &coverage, &free)?;
        let objective = Objective::new(model, data, free, self.backend);
        let mut state = AdamState::new(model, objective.free(), &params);

        let mut history = Vec::with_capacity(self.steps);
        let divergence = state.run(self, &objective, &mut params, self.steps, Some(&mut history))?;

        // The loop checks the loss before each step; the last step is checked here.
        let (status, end) = match divergence {
            Some(divergence) => {
                // `params` were restored to the last finite iterate, whose loss was recorded.
                let end = objective.loss_grad(&params)?;
                (divergence.into_status(), end)
            }
            None => {
                let end = objective.loss_grad(&params)?;
                match Divergence::check(objective.model(), objective.free(), &end, self.steps) {
                    Some(divergence) => {
                        state.restore_previous(objective.model(), &mut params);
                        (divergence.into_status(), objective.loss_grad(&params)?)
                    }
                    None => (FitStatus::MaxIterations, end),
                }
            }
        };
        let max_abs_grad = objective.max_abs_grad(&end, &params);
        let status = match status {
            FitStatus::MaxIterations if max_abs_grad <= self.grad_tol => FitStatus::Converged,
            other => other,
        };
        Ok(Fit {
            engine: self.name(),
            loss: end.loss,
            loss_history: history,
            status,
            iterations: self.steps,
            max_abs_grad,
            wall_time: started.elapsed(),
            blocks: vec![BlockReport {
                name: "all".to_string(),
                method: BlockMethod::Gradient {
                    steps_per_cycle: self.steps,
                },
                reason: "Adam moves every free parameter together".to_string(),
            }],
            warnings: crate::engine::coverage_warnings(model, &coverage, objective.free()),
            coverage,
            params,
        })
    }
}

/// Position of one free parameter in the flat vector that Adam steps.
#[derive(Debug, Clone)]
struct Segment {
    /// `None` for the latents, else the parameter index.
    param: Option<usize>,
    offset: usize,
    len: usize,
    /// Stepped as ln x (HalfNormal prior).
    positive: bool,
}

/// Adam's moments and the layout of the free parameters; kept across calls so a
/// block sub-engine resumes where the previous cycle stopped.
#[derive(Debug, Clone)]
pub(crate) struct AdamState {
    segments: Vec<Segment>,
    theta: Vec<f64>,
    /// The iterate before the last step, kept to fall back on when a step diverges.
    previous: Vec<f64>,
    m: Vec<f64>,
    v: Vec<f64>,
    t: i32,
}

/// Smallest value a positive parameter is stepped from, so that ln x is finite.
const MIN_POSITIVE: f64 = 1e-12;

impl AdamState {
    pub(crate) fn new(model: &Model, free: &Free, params: &Params) -> Self {
        let mut segments = Vec::new();
        let mut offset = 0;
        if free.latents {
            let len = params.latents().len();
            segments.push(Segment {
                param: None,
                offset,
                len,
                positive: false,
            });
            offset += len;
        }
        for (index, node) in model.params().iter().enumerate() {
            if free.params[index] {
                let len = node.len();
                segments.push(Segment {
                    param: Some(index),
                    offset,
                    len,
                    positive: node.prior.is_positive(),
                });
                offset += len;
            }
        }
        Self {
            segments,
            theta: vec![0.0; offset],
            previous: vec![0.0; offset],
            m: vec![0.0; offset],
            v: vec![0.0; offset],
            t: 0,
        }
    }

    fn pack(&mut self, model: &Model, params: &Params) {
        for seg in &self.segments {
            let values = values_of(model, params, seg.param);
            let dst = &mut self.theta[seg.offset..seg.offset + seg.len];
            for (d, &x) in dst.iter_mut().zip(values) {
                *d = if seg.positive { x.max(MIN_POSITIVE).ln() } else { x };
            }
        }
    }

    fn unpack(&self, model: &Model, params: &mut Params) {
        for seg in &self.segments {
            let src = &self.theta[seg.offset..seg.offset + seg.len];
            let dst: &mut [f64] = match seg.param {
                None => params.latents_mut().as_slice_mut().expect("standard layout"),
                Some(index) => params
                    .get_mut(&model.params()[index].name)
                    .expect("checked parameter")
                    .as_slice_mut()
                    .expect("standard layout"),
            };
            if seg.positive {
                dst.iter_mut().zip(src).for_each(|(d, &u)| *d = u.exp());
            } else {
                dst.copy_from_slice(src);
            }
        }
    }

    /// Runs `steps` Adam steps from `params`, writing the result back into `params`.
    ///
    /// Stops early when the loss or the gradient at the current iterate is not finite;
    /// `params` then hold the previous, finite iterate and the reason is returned.
    pub(crate) fn run(
        &mut self,
        settings: &Adam,
        objective: &Objective,
        params: &mut Params,
        steps: usize,
        mut history: Option<&mut Vec<f64>>,
    ) -> Result<Option<Divergence>, FitError> {
        self.pack(objective.model(), params);
        self.previous.clone_from(&self.theta);
        let mut grad_flat = vec![0.0; self.theta.len()];

        for step in 0..steps {
            let grad = objective.loss_grad(params)?;
            if let Some(divergence) = Divergence::check(objective.model(), objective.free(), &grad, step) {
                self.restore_previous(objective.model(), params);
                return Ok(Some(divergence));
            }
            if let Some(history) = history.as_deref_mut() {
                history.push(grad.loss);
            }
            self.flatten_grad(objective.model(), params, &grad, &mut grad_flat);
            self.previous.copy_from_slice(&self.theta);
            self.update(settings, &grad_flat);
            self.unpack(objective.model(), params);
        }
        Ok(None)
    }

    /// Puts the iterate from before the last step back into `params`.
    pub(crate) fn restore_previous(&mut self, model: &Model, params: &mut Params) {
        self.theta.copy_from_slice(&self.previous);
        self.unpack(model, params);
    }

    fn flatten_grad(&self, model: &Model, params: &Params, grad: &Gradient, out: &mut [f64]) {
        for seg in &self.segments {
            let g: &[f64] = match seg.param {
                None => grad.latents.as_slice().expect("standard layout"),
                Some(index) => grad.params[index].as_slice().expect("standard layout"),
            };
            let dst = &mut out[seg.offset..seg.offset + seg.len];
            if seg.positive {
                // d/du of f(e^u) = f'(x) x.
                let values = values_of(model, params, seg.param);
                for ((d, &gi), &x) in dst.iter_mut().zip(g).zip(values) {
                    *d = gi * x;
                }
            } else {
                dst.copy_from_slice(g);
            }
        }
    }

    fn update(&mut self, settings: &Adam, grad: &[f64]) {
        self.t += 1;
        let (b1, b2) = (settings.beta1, settings.beta2);
        let step = settings.learning_rate * (1.0 - b2.powi(self.t)).sqrt() / (1.0 - b1.powi(self.t));
        let eps_hat = settings.epsilon * (1.0 - b2.powi(self.t)).sqrt();
        for (((theta, m), v), &g) in self.theta.iter_mut().zip(&mut self.m).zip(&mut self.v).zip(grad) {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            *theta -= step * *m / (v.sqrt() + eps_hat);
        }
    }
}

fn values_of<'a>(model: &Model, params: &'a Params, param: Option<usize>) -> &'a [f64] {
    match param {
        None => params.latents().as_slice().expect("standard layout"),
        Some(index) => params
            .get(&model.params()[index].name)
            .expect("checked parameter")
            .as_slice()
            .expect("standard layout"),
    }
}

/// A non-finite loss or gradient met at some iteration.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Divergence {
    pub iteration: usize,
    pub quantity: String,
}

impl Divergence {
    /// Returns the first non-finite quantity in `grad`: the loss, else the gradient of
    /// the first free parameter with a non-finite element.
    pub(crate) fn check(model: &Model, free: &Free, grad: &Gradient, iteration: usize) -> Option<Self> {
        let quantity = if !grad.loss.is_finite() {
            "loss".to_string()
        } else if free.latents && grad.latents.iter().any(|g| !g.is_finite()) {
            "gradient of the latents".to_string()
        } else {
            let index = (0..grad.params.len())
                .find(|&i| free.params[i] && grad.params[i].iter().any(|g| !g.is_finite()))?;
            format!("gradient of `{}`", model.params()[index].name)
        };
        Some(Self { iteration, quantity })
    }

    pub(crate) fn into_status(self) -> FitStatus {
        FitStatus::Diverged {
            iteration: self.iteration,
            quantity: self.quantity,
        }
    }
}
