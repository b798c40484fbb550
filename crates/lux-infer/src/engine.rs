//! The engine interface: one trait, fit options and the fit result.

use std::time::Duration;

use lux_dsl::coverage::list_indices;
use lux_dsl::{Coverage, DataError, Dataset, Model, Params, Prior};
use ndarray::{Array2, ArrayD, Dimension};

use crate::error::FitError;

/// An inference engine: a type holding its settings, and one call that fits a model.
///
/// Every engine minimizes the same loss, the negative log posterior of
/// [`lux_dsl::eval`], so the losses of different engines compare number for number.
pub trait Engine {
    /// Short name used in reports, such as `block_wls` or `adam`.
    fn name(&self) -> &'static str;

    /// Fits `model` to `data`, with the start and the fixed parameters of `options`.
    fn fit(&self, model: &Model, data: &Dataset, options: &FitOptions) -> Result<Fit, FitError>;
}

/// What to fit and where to start.
#[derive(Debug, Clone, Default)]
pub struct FitOptions {
    /// Starting values. When absent the engine chooses its own start (see each engine).
    pub init: Option<Params>,
    /// Global parameters held at their starting values.
    pub fixed: Vec<String>,
    /// Whether the latents are held at their starting values.
    pub latents_fixed: bool,
    /// Seed of any random start.
    pub seed: u64,
}

impl FitOptions {
    /// Starts from `init` with everything free.
    pub fn from_init(init: Params) -> Self {
        Self {
            init: Some(init),
            ..Self::default()
        }
    }

    /// Infers the latents of `n_objects` new objects with every global parameter of
    /// `trained` held fixed; the latents start at zero.
    pub fn infer_latents(model: &Model, trained: &Params, n_objects: usize) -> Self {
        let mut init = trained.clone();
        init.set_latents(Array2::zeros((n_objects, model.latent_size())));
        Self {
            init: Some(init),
            fixed: model.params().iter().map(|p| p.name.clone()).collect(),
            latents_fixed: false,
            seed: 0,
        }
    }

    /// Holds the global parameter `name` fixed.
    pub fn fix(mut self, name: &str) -> Self {
        self.fixed.push(name.to_string());
        self
    }

    /// Holds the latents fixed (for example at known labels, as when training The Cannon).
    pub fn fix_latents(mut self) -> Self {
        self.latents_fixed = true;
        self
    }

    /// Sets the seed of the random start.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Resolves the names against `model`.
    pub(crate) fn free(&self, model: &Model) -> Result<Free, FitError> {
        let mut params = vec![true; model.params().len()];
        for name in &self.fixed {
            if model.latent_id(name).is_some() {
                return Err(FitError::LatentInFixedSet { name: name.clone() });
            }
            let id = model.param_id(name).ok_or_else(|| FitError::UnknownParameter {
                name: name.clone(),
                available: model.params().iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", "),
            })?;
            params[id.index()] = false;
        }
        let free = Free {
            latents: !self.latents_fixed,
            params,
        };
        if !free.latents && !free.params.iter().any(|&p| p) {
            return Err(FitError::NothingFree);
        }
        Ok(free)
    }

    /// Returns the starting point: `init`, or a draw from the priors with `seed`, pulled toward
    /// the priors' centers by `spread` (see [`Model::sample_params_spread`]). Checks its
    /// shapes against the model and the data, and that it is finite and inside the
    /// support of every prior.
    pub(crate) fn start(&self, model: &Model, data: &Dataset, spread: f64) -> Result<Params, FitError> {
        self.free(model)?;
        let params = match &self.init {
            Some(init) => init.clone(),
            None => {
                // A fixed value drawn at random would silently shape the whole fit.
                if let Some(name) = self.fixed.first() {
                    return Err(FitError::FixedWithoutValue { name: name.clone() });
                }
                if self.latents_fixed {
                    return Err(FitError::FixedWithoutValue {
                        name: "latents".to_string(),
                    });
                }
                model.sample_params_spread(data.n_objects(), self.seed, spread)
            }
        };
        model.check_params(&params)?;
        model.check_data(&params, data)?;
        for node in model.params().iter().filter(|node| node.prior.is_positive()) {
            let value = params.require(&node.name)?;
            if let Some((element, &value)) = value.indexed_iter().find(|(_, x)| **x < 0.0) {
                return Err(DataError::NegativeParameter {
                    name: node.name.clone(),
                    element: element.slice().to_vec(),
                    value,
                }
                .into());
            }
        }
        Ok(params)
    }
}

/// Lists what the data leave to the priors alone: outputs absent from the data whose
/// parameters are free, objects without any observed element, and output elements
/// (columns) that no object observes.
pub(crate) fn coverage_warnings(model: &Model, coverage: &Coverage, free: &Free) -> Vec<String> {
    let mut warnings = Vec::new();
    for name in &coverage.absent {
        let obs = model.observe(name).expect("coverage lists model outputs");
        let moved: Vec<String> = model
            .params_of(obs.mean)
            .into_iter()
            .filter(|p| free.params[p.index()])
            .map(|p| format!("`{}`", model.param(p).name))
            .collect();
        if !moved.is_empty() {
            warnings.push(format!(
                "output `{name}` is absent from the data, so {} keep their starting values or follow their priors",
                moved.join(", ")
            ));
        }
    }
    if !coverage.empty_objects.is_empty() && free.latents {
        warnings.push(format!(
            "{} objects have no observed element (rows {}); their latents are fitted from the prior alone",
            coverage.empty_objects.len(),
            list_indices(&coverage.empty_objects)
        ));
    }
    for out in coverage.outputs.iter().filter(|o| !o.empty_columns.is_empty()) {
        warnings.push(format!(
            "output `{}`: {} elements are observed by no object (columns {}); their parameters are fitted from the prior alone",
            out.name,
            out.empty_columns.len(),
            list_indices(&out.empty_columns)
        ));
    }
    warnings
}

/// Rejects a fit in which data and priors together leave something undefined: free
/// latents of an object without any observed element under a flat latent prior, or a
/// free flat-prior parameter row that predicts a column no object observes.
pub(crate) fn check_coverage(model: &Model, coverage: &Coverage, free: &Free) -> Result<(), FitError> {
    if free.latents && !coverage.empty_objects.is_empty() {
        if let Some(flat) = model.latents().iter().find(|l| matches!(l.prior, Prior::Flat)) {
            return Err(DataError::UnconstrainedObjects {
                latent: flat.name.clone(),
                rows: coverage.empty_objects.clone(),
            }
            .into());
        }
    }
    let structure = model.structure();
    for (observe, obs) in model.observes().iter().enumerate() {
        let Some(out) = coverage.output(&obs.name) else { continue };
        if out.empty_columns.is_empty() {
            continue;
        }
        for layer in structure.layers[observe].iter().flatten() {
            let params = layer.matrix.into_iter().chain(layer.bias);
            for param in params.filter(|p| free.params[p.index()]) {
                let node = model.param(param);
                if !matches!(node.prior, Prior::Flat) {
                    continue;
                }
                let columns: Vec<usize> = out.empty_columns.iter().copied().filter(|c| layer.rows.contains(c)).collect();
                if !columns.is_empty() {
                    return Err(DataError::UnconstrainedColumns {
                        output: obs.name.clone(),
                        param: node.name.clone(),
                        columns,
                    }
                    .into());
                }
            }
        }
    }
    Ok(())
}

/// Free parts of a model: the latents and each global parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Free {
    pub latents: bool,
    /// Indexed like [`Model::params`].
    pub params: Vec<bool>,
}

impl Free {
    /// Returns whether the parameter called `name` is fixed.
    pub fn is_fixed(&self, model: &Model, name: &str) -> bool {
        model.param_id(name).is_some_and(|id| !self.params[id.index()])
    }

    /// Computes the loss over the free parameters: the data term plus the priors of
    /// what is free.
    ///
    /// Non-finite parameters give a NaN loss rather than an error: inside a fit they
    /// come from the fit's own arithmetic, and the engine reports a non-finite loss.
    pub fn loss(&self, model: &Model, params: &Params, data: &Dataset) -> Result<f64, FitError> {
        let terms = match model.loss_terms(params, data) {
            Ok(terms) => terms,
            Err(DataError::NonFiniteParameter { .. }) => return Ok(f64::NAN),
            Err(err) => return Err(err.into()),
        };
        Ok(terms.total_free(!self.latents, |name| self.is_fixed(model, name)))
    }
}

/// Method by which one block was fitted.
#[derive(Debug, Clone, PartialEq)]
pub enum BlockMethod {
    /// Solved exactly by weighted least squares in every cycle.
    ClosedForm,
    /// Not linear-Gaussian, but every element is the exact minimizer of its own
    /// one-dimensional problem (an intrinsic scatter), found by a root search.
    ElementwiseExact,
    /// Every object's latents take this many damped Gauss-Newton steps per cycle.
    GaussNewton { steps_per_cycle: usize },
    /// Moved by a gradient sub-engine: Adam with this many steps per cycle.
    Gradient { steps_per_cycle: usize },
    /// Held fixed.
    Fixed,
}

/// One block of a fit: its name, how it ran and why.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockReport {
    pub name: String,
    pub method: BlockMethod,
    pub reason: String,
}

/// Outcome of a fit.
#[derive(Debug, Clone, PartialEq)]
pub enum FitStatus {
    /// The stopping rule was met and the largest gradient element is within the
    /// engine's gradient tolerance.
    Converged,
    /// The stopping rule on the loss was met, but the largest gradient element is
    /// still above the engine's gradient tolerance: the loss stalled short of an optimum.
    Stalled,
    /// The iteration cap was reached first; `params` are the last iterate.
    MaxIterations,
    /// The loss or the gradient became non-finite at `iteration`; `params` are the
    /// last finite iterate, from before that step.
    Diverged {
        /// Cycle (block WLS) or step (Adam) at which the non-finite value appeared.
        iteration: usize,
        /// Quantity that became non-finite: `loss`, or `gradient of `name``.
        quantity: String,
    },
}

/// The result of a fit.
#[derive(Debug, Clone)]
pub struct Fit {
    /// The engine that produced the fit.
    pub engine: &'static str,
    /// Fitted values of the latents and of every global parameter (fixed ones included).
    pub params: Params,
    /// Loss at `params`: the negative log posterior of the free parameters.
    pub loss: f64,
    /// Loss after each cycle (block WLS) or before each step (Adam).
    pub loss_history: Vec<f64>,
    /// Outcome of the fit: converged, stopped at the cap, or diverged.
    pub status: FitStatus,
    /// Cycles (block WLS) or steps (Adam) taken.
    pub iterations: usize,
    /// Largest absolute element of the gradient of the loss over the free parameters
    /// at `params`; for a HalfNormal-prior parameter x, of the gradient with respect to
    /// ln x, which also vanishes at an optimum on the boundary x = 0.
    pub max_abs_grad: f64,
    /// Wall-clock time of the fit.
    pub wall_time: Duration,
    /// Method and reason for each block (block WLS); Adam reports one gradient block.
    pub blocks: Vec<BlockReport>,
    /// Coverage of the data: missing elements per output, objects and columns without
    /// any data.
    pub coverage: Coverage,
    /// Warnings about what the data leave to the priors alone: outputs absent from the
    /// data, objects without data, output elements observed by no object. Empty when
    /// every object and element has data.
    pub warnings: Vec<String>,
}

impl Fit {
    /// Returns whether the stopping rule was met and the largest gradient element is
    /// within the engine's gradient tolerance.
    pub fn converged(&self) -> bool {
        self.status == FitStatus::Converged
    }

    /// Returns whether the fit stopped on a non-finite loss or gradient.
    pub fn diverged(&self) -> bool {
        matches!(self.status, FitStatus::Diverged { .. })
    }

    /// Returns the fitted global parameter `name`.
    pub fn get(&self, name: &str) -> Option<&ArrayD<f64>> {
        self.params.get(name)
    }

    /// Returns the fitted latents, N×K.
    pub fn latents(&self) -> &Array2<f64> {
        self.params.latents()
    }
}
