//! Block-coordinate weighted least squares.
//!
//! Each cycle visits the blocks of [`lux_dsl::Structure`] in order: the latents, then
//! each output's mean parameters, then each intrinsic scatter. A block the graph
//! proves linear-Gaussian is solved exactly, with one small Cholesky solve per object or
//! per output element. Any other block is moved by a few Adam steps. After the exact
//! solves, a rebalancing step along the latent-space symmetry (see [`symmetry`]) takes
//! the fit straight to the bottom of the valley that alternation alone crawls along.

pub(crate) mod gauss_newton;
pub(crate) mod latents;
mod layer;
pub(crate) mod normal;
mod scatter;
mod symmetry;

use std::time::Instant;

use faer::Par;
use lux_dsl::{BlockKind, Dataset, Model, Params, Structure};

use crate::adam::{Adam, AdamState, Divergence};
use crate::engine::{BlockMethod, BlockReport, Engine, Fit, FitOptions, FitStatus, Free};
use crate::error::FitError;
use crate::gradient::{Gradient, GradientBackend, Objective};

/// When the loss is considered to have stopped changing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StoppingRule {
    /// `|L_{k−1} − L_k| / max(|L_k|, 1) < tol` on two cycles running.
    #[default]
    RelativeChange,
    /// The rule of pollux 0.1.0's `optimize_iterative`:
    /// `|L_{k−1} − L_k| / max(|L_1 − L_k|, |L_{k−1} − L_k|) < tol` on two cycles
    /// running, relative to the total drop since the first cycle.
    Reference,
}

/// The block-WLS engine.
///
/// Without a starting point in [`FitOptions::init`] it starts from one draw from the
/// priors (seeded by [`FitOptions::seed`]).
#[derive(Debug, Clone)]
pub struct BlockWls {
    /// Upper bound on cycles (50).
    pub max_cycles: usize,
    /// Tolerance of the stopping rule (1e-6).
    pub tol: f64,
    pub stopping: StoppingRule,
    /// Apply the rebalancing step where the graph proves the symmetry (true).
    pub rebalance: bool,
    /// Extrapolate every third cycle from the previous two (SQUAREM) when every block
    /// is closed form (true).
    pub accelerate: bool,
    /// `converged` requires the largest absolute gradient element at the end to be at
    /// most this (1e-2), besides the stopping rule.
    pub grad_tol: f64,
    /// Names of the blocks to fit (`latents`, `flux:mean`, ...); the others stay at
    /// their starting values. `None` fits every block.
    pub blocks: Option<Vec<String>>,
    /// Adam steps per cycle for each block that is not closed form (50).
    pub sub_steps: usize,
    /// Learning rate of those steps (1e-2).
    pub sub_learning_rate: f64,
    /// Steps per cycle and learning rate for named blocks, overriding `sub_steps` and
    /// `sub_learning_rate` (see [`BlockWls::sub_engine`]).
    pub sub_engine_overrides: Vec<(String, usize, f64)>,
    /// Gradient method for those blocks and for the final check.
    pub backend: GradientBackend,
    /// Called after every cycle with the cycle number (from 1) and the loss, for
    /// progress reports. `None` by default.
    pub on_cycle: Option<CycleObserver>,
}

/// A callback that receives the cycle number and the loss after each cycle.
#[derive(Clone)]
pub struct CycleObserver(pub std::sync::Arc<dyn Fn(usize, f64) + Send + Sync>);

impl std::fmt::Debug for CycleObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CycleObserver")
    }
}

impl Default for BlockWls {
    fn default() -> Self {
        Self {
            max_cycles: 50,
            tol: 1e-6,
            stopping: StoppingRule::RelativeChange,
            rebalance: true,
            accelerate: true,
            grad_tol: 1e-2,
            blocks: None,
            sub_steps: 50,
            sub_learning_rate: 1e-2,
            sub_engine_overrides: Vec::new(),
            backend: GradientBackend::Auto,
            on_cycle: None,
        }
    }
}

/// A block as it runs in this fit.
enum Runner<'a> {
    Fixed,
    Latents,
    Layers { observe: usize, layers: Vec<lux_dsl::LinearLayer> },
    Scatter { observe: usize },
    GaussNewton(gauss_newton::GaussNewton),
    Gradient {
        objective: Objective<'a>,
        state: AdamState,
        settings: Adam,
    },
}

impl BlockWls {
    /// Block WLS with the given cycle limit and tolerance, other settings default.
    pub fn new(max_cycles: usize, tol: f64) -> Self {
        Self {
            max_cycles,
            tol,
            ..Self::default()
        }
    }

    /// Sets the Adam steps per cycle and the learning rate of one block that is not
    /// closed form, such as `flux:scatter`.
    pub fn sub_engine(mut self, block: &str, steps: usize, learning_rate: f64) -> Self {
        self.sub_engine_overrides.retain(|(name, _, _)| name != block);
        self.sub_engine_overrides.push((block.to_string(), steps, learning_rate));
        self
    }

    /// Adam settings of the gradient sub-engine for `block`.
    fn sub_settings(&self, block: &str) -> Adam {
        let (steps, learning_rate) = self
            .sub_engine_overrides
            .iter()
            .find(|(name, _, _)| name == block)
            .map_or((self.sub_steps, self.sub_learning_rate), |&(_, steps, rate)| (steps, rate));
        Adam {
            backend: self.backend,
            ..Adam::new(learning_rate, steps)
        }
    }

    /// Passes the latest cycle to [`BlockWls::on_cycle`], if set.
    fn report(&self, history: &[f64]) {
        if let (Some(observer), Some(&loss)) = (&self.on_cycle, history.last()) {
            (observer.0)(history.len(), loss);
        }
    }

    /// Fits only the named blocks.
    pub fn only(mut self, blocks: &[&str]) -> Self {
        self.blocks = Some(blocks.iter().map(|b| b.to_string()).collect());
        self
    }

    fn validate(&self, structure: &Structure) -> Result<(), FitError> {
        if self.max_cycles == 0 {
            return Err(FitError::InvalidSetting {
                setting: "max_cycles",
                value: "0".to_string(),
                reason: "run at least one cycle",
            });
        }
        if !(self.tol.is_finite() && self.tol >= 0.0) {
            return Err(FitError::InvalidSetting {
                setting: "tol",
                value: self.tol.to_string(),
                reason: "give a finite tolerance ≥ 0",
            });
        }
        let sub_engines = std::iter::once(("sub_learning_rate", self.sub_steps, self.sub_learning_rate)).chain(
            self.sub_engine_overrides
                .iter()
                .map(|(_, steps, rate)| ("sub_engine learning rate", *steps, *rate)),
        );
        for (setting, steps, rate) in sub_engines {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(FitError::InvalidSetting {
                    setting,
                    value: rate.to_string(),
                    reason: "give a finite learning rate > 0",
                });
            }
            if steps == 0 {
                return Err(FitError::InvalidSetting {
                    setting: "sub_steps",
                    value: "0".to_string(),
                    reason: "a block that is not closed form needs at least one Adam step per cycle",
                });
            }
        }
        for (name, _, _) in &self.sub_engine_overrides {
            if !structure.blocks.iter().any(|b| &b.name == name) {
                return Err(FitError::UnknownBlock {
                    name: name.clone(),
                    available: structure.blocks.iter().map(|b| b.name.as_str()).collect::<Vec<_>>().join(", "),
                });
            }
        }
        if let Some(names) = &self.blocks {
            for name in names {
                if !structure.blocks.iter().any(|b| &b.name == name) {
                    return Err(FitError::UnknownBlock {
                        name: name.clone(),
                        available: structure.blocks.iter().map(|b| b.name.as_str()).collect::<Vec<_>>().join(", "),
                    });
                }
            }
        }
        Ok(())
    }

    fn selected(&self, name: &str) -> bool {
        self.blocks.as_ref().is_none_or(|names| names.iter().any(|n| n == name))
    }

    /// Decides how each block runs: fixed, exact, or by Adam steps.
    fn plan<'a>(
        &self,
        model: &'a Model,
        data: &'a Dataset,
        structure: &Structure,
        free: &Free,
        params: &Params,
    ) -> (Vec<Runner<'a>>, Vec<BlockReport>) {
        let mut runners = Vec::new();
        let mut reports = Vec::new();
        for block in &structure.blocks {
            let (block_free_latents, block_params): (bool, Vec<usize>) = match block.kind {
                BlockKind::Latents => (free.latents, Vec::new()),
                _ => (false, block.params.iter().map(|p| p.index()).filter(|&i| free.params[i]).collect()),
            };
            let observed = match block.kind {
                BlockKind::Latents => true,
                BlockKind::Mean { output } | BlockKind::Scatter { output } => {
                    data.output(&model.observes()[output].name).is_some()
                }
            };
            let any_free = block_free_latents || !block_params.is_empty();

            if !self.selected(&block.name) || !any_free || !observed {
                let reason = if !self.selected(&block.name) {
                    "not among the blocks chosen for this fit".to_string()
                } else if !observed {
                    "its output is absent from the data".to_string()
                } else {
                    "every parameter of the block is fixed".to_string()
                };
                runners.push(Runner::Fixed);
                reports.push(BlockReport {
                    name: block.name.clone(),
                    method: BlockMethod::Fixed,
                    reason,
                });
                continue;
            }

            let all_free = block_params.len() == block.params.len();
            let runner = match block.kind {
                BlockKind::Latents if block.closed_form => Some(Runner::Latents),
                // Nonlinear latents under Gaussian or flat priors take Gauss-Newton steps,
                // unless an Adam sub-engine was asked for by name.
                BlockKind::Latents
                    if model.latents().iter().all(|l| l.prior.gaussian().is_some())
                        && !self.sub_engine_overrides.iter().any(|(name, _, _)| name == "latents") =>
                {
                    Some(Runner::GaussNewton(gauss_newton::GaussNewton::new(data.n_objects())))
                }
                BlockKind::Scatter { output } if all_free => Some(Runner::Scatter { observe: output }),
                BlockKind::Mean { output } if block.closed_form && all_free => structure.layers[output]
                    .clone()
                    .map(|layers| Runner::Layers { observe: output, layers }),
                _ => None,
            };
            match runner {
                Some(runner) => {
                    let method = match runner {
                        Runner::Scatter { .. } => BlockMethod::ElementwiseExact,
                        Runner::GaussNewton(_) => BlockMethod::GaussNewton {
                            steps_per_cycle: gauss_newton::STEPS_PER_CYCLE,
                        },
                        _ => BlockMethod::ClosedForm,
                    };
                    let reason = match runner {
                        Runner::Scatter { .. } => format!(
                            "{}. Each element is the exact minimizer of its own one-dimensional problem.",
                            block.reason
                        ),
                        Runner::GaussNewton(_) => format!(
                            "{}. Each object's latents take damped Gauss-Newton steps on its own problem.",
                            block.reason
                        ),
                        _ => block.reason.clone(),
                    };
                    runners.push(runner);
                    reports.push(BlockReport {
                        name: block.name.clone(),
                        method,
                        reason,
                    });
                }
                None => {
                    // NOTE: fixed-rate Adam sub-steps keep the loss moving by more than `tol`,
                    // so a fit with such a block rarely reports `converged`.
                    let sub_free = Free {
                        latents: block_free_latents,
                        params: (0..model.params().len()).map(|i| block_params.contains(&i)).collect(),
                    };
                    let state = AdamState::new(model, &sub_free, params);
                    let objective = Objective::new(model, data, sub_free, self.backend);
                    let reason = if block.closed_form {
                        format!("{}, but part of it is fixed, so Adam steps the rest", block.reason)
                    } else {
                        block.reason.clone()
                    };
                    let settings = self.sub_settings(&block.name);
                    reports.push(BlockReport {
                        name: block.name.clone(),
                        method: BlockMethod::Gradient {
                            steps_per_cycle: settings.steps,
                        },
                        reason,
                    });
                    runners.push(Runner::Gradient {
                        objective,
                        state,
                        settings,
                    });
                }
            }
        }
        (runners, reports)
    }

    /// Applies the stopping rule to the loss history; under
    /// [`StoppingRule::RelativeChange`] the largest gradient element must also be at most
    /// `grad_tol`.
    fn stop(
        &self,
        history: &[f64],
        below: &mut usize,
        objective: &Objective,
        params: &Params,
        last_grad: &mut Option<Gradient>,
    ) -> Result<bool, FitError> {
        let k = history.len();
        if k < 2 {
            return Ok(false);
        }
        let (previous, current) = (history[k - 2], history[k - 1]);
        let change = (previous - current).abs();
        let ratio = match self.stopping {
            StoppingRule::RelativeChange => change / current.abs().max(1.0),
            StoppingRule::Reference => {
                let denominator = (history[0] - current).abs().max(change);
                if denominator == 0.0 { 0.0 } else { change / denominator }
            }
        };
        if ratio < self.tol {
            *below += 1;
        } else {
            *below = 0;
        }
        if *below < 2 {
            return Ok(false);
        }
        match self.stopping {
            StoppingRule::Reference => Ok(true),
            StoppingRule::RelativeChange => {
                let grad = objective.loss_grad(params)?;
                let small = objective.max_abs_grad(&grad, params) <= self.grad_tol;
                *last_grad = Some(grad);
                Ok(small)
            }
        }
    }
}

/// Copies the latents and every global parameter into one vector, end to end.
fn flatten(params: &Params) -> Vec<f64> {
    let mut out: Vec<f64> = params.latents().iter().copied().collect();
    for (_, value) in params.globals() {
        out.extend(value.iter().copied());
    }
    out
}

/// Copies a vector made by [`flatten`] back into `params`.
fn unflatten(flat: &[f64], params: &mut Params) {
    let n = params.latents().len();
    params
        .latents_mut()
        .as_slice_mut()
        .expect("standard layout")
        .copy_from_slice(&flat[..n]);
    let mut offset = n;
    let names: Vec<String> = params.globals().map(|(name, _)| name.to_string()).collect();
    for name in names {
        let value = params.get_mut(&name).expect("listed above");
        let len = value.len();
        value
            .as_slice_mut()
            .expect("standard layout")
            .copy_from_slice(&flat[offset..offset + len]);
        offset += len;
    }
}

/// Computes the SQUAREM point `x0 − 2α r + α² v` with `r = x1 − x0`, `v = x2 − 2 x1 + x0` and
/// `α = −‖r‖/‖v‖` (capped at −1, where it equals x2). `None` when there is no
/// extrapolation to make.
fn squarem_point(x0: &[f64], x1: &[f64], x2: &[f64]) -> Option<Vec<f64>> {
    let mut rr = 0.0;
    let mut vv = 0.0;
    for ((&a, &b), &c) in x0.iter().zip(x1).zip(x2) {
        let r = b - a;
        let v = c - 2.0 * b + a;
        rr += r * r;
        vv += v * v;
    }
    if !(vv > 0.0) {
        return None;
    }
    let alpha = -(rr / vv).sqrt();
    if alpha >= -1.0 {
        return None;
    }
    Some(
        x0.iter()
            .zip(x1)
            .zip(x2)
            .map(|((&a, &b), &c)| {
                let r = b - a;
                let v = c - 2.0 * b + a;
                a - 2.0 * alpha * r + alpha * alpha * v
            })
            .collect(),
    )
}

impl Engine for BlockWls {
    fn name(&self) -> &'static str {
        "block_wls"
    }

    fn fit(&self, model: &Model, data: &Dataset, options: &FitOptions) -> Result<Fit, FitError> {
        let started = Instant::now();
        let structure = model.structure();
        self.validate(&structure)?;
        let mut params = options.start(model, data, 1.0)?;
        let free = options.free(model)?;
        let coverage = model.coverage(data);
        crate::engine::check_coverage(model, &coverage, &free)?;

        let (mut runners, blocks) = self.plan(model, data, &structure, &free, &params);
        let active = runners.iter().filter(|r| !matches!(r, Runner::Fixed)).count();
        if active == 0 {
            return Err(FitError::NothingFree);
        }

        // Blocks left out of this fit count as fixed: the loss and the gradient cover
        // only what the fit moves.
        let warnings = crate::engine::coverage_warnings(model, &coverage, &free);
        let mut free = free;
        for (block, runner) in structure.blocks.iter().zip(&runners) {
            if matches!(runner, Runner::Fixed) {
                match block.kind {
                    BlockKind::Latents => free.latents = false,
                    _ => block.params.iter().for_each(|p| free.params[p.index()] = false),
                }
            }
        }
        // One exact block and nothing else to alternate with: one solve is the optimum.
        let single_exact = active == 1 && runners.iter().any(|r| matches!(r, Runner::Latents | Runner::Layers { .. } | Runner::Scatter { .. }));

        let symmetry = structure.symmetry.as_ref().filter(|sym| {
            self.rebalance
                && free.latents
                && self.selected("latents")
                && sym.matrices.iter().all(|map| free.params[map.matrix.index()])
                && blocks
                    .iter()
                    .all(|b| b.method != BlockMethod::Fixed || !b.name.ends_with(":mean"))
        });

        // Each exact block forms all its normal matrices with one GEMM. A large one is split
        // over the rayon threads; a small one (the tutorial's, 1024 × 130 × 36) runs faster
        // on one thread than with the fork-join cost, measured on 2 cores.
        let outputs: usize = model.observes().iter().map(|o| o.size).sum();
        let work = data.n_objects() * outputs * normal::packed_len(model.latent_size());
        let par = if work >= PARALLEL_GEMM_WORK { Par::rayon(0) } else { Par::Seq };
        let objective = Objective::new(model, data, free.clone(), self.backend);
        let exact_only = runners.iter().all(|r| !matches!(r, Runner::Gradient { .. }));
        let accelerate = self.accelerate && exact_only && !single_exact;

        let run_cycle = |params: &mut Params, runners: &mut [Runner]| -> Result<Cycle, FitError> {
            for (runner, report) in runners.iter_mut().zip(&blocks) {
                match runner {
                    Runner::Fixed => {}
                    Runner::Latents => latents::solve_latents(model, params, data, par)?,
                    Runner::Layers { observe, layers } => {
                        let w = normal::output_weights(model, params, data, *observe).expect("output is present");
                        for layer in layers.iter() {
                            layer::solve_layer(model, params, data, *observe, layer, &w, &report.name, par)?;
                        }
                    }
                    Runner::Scatter { observe } => scatter::solve_scatter(model, params, data, *observe)?,
                    Runner::GaussNewton(state) => state.run(model, params, data)?,
                    Runner::Gradient {
                        objective,
                        state,
                        settings,
                    } => {
                        if let Some(divergence) = state.run(settings, objective, params, settings.steps, None)? {
                            return Ok(Cycle::Diverged(format!(
                                "{} in Adam sub-step {} of block `{}`",
                                divergence.quantity, divergence.iteration, report.name
                            )));
                        }
                    }
                }
            }
            if let Some(sym) = symmetry {
                symmetry::rebalance(model, params, sym);
                symmetry::translate(model, params, sym);
            }
            let loss = free.loss(model, params, data)?;
            Ok(if loss.is_finite() {
                Cycle::Loss(loss)
            } else {
                Cycle::Diverged("loss".to_string())
            })
        };

        let mut history: Vec<f64> = Vec::new();
        let mut below = 0;
        let mut rule_met = false;
        let mut last_grad = None;
        let mut divergence: Option<Divergence> = None;

        // With acceleration each pass is two plain cycles and a third one that starts from
        // the SQUAREM extrapolation of the first two (Varadhan & Roland 2008, scheme S3).
        // The third falls back to the plain result when it would raise the loss.
        'cycles: while history.len() < self.max_cycles {
            let mut states = Vec::new();
            if accelerate {
                states.push(flatten(&params));
            }
            for _ in 0..if accelerate { 2 } else { 1 } {
                let before = flatten(&params);
                match run_cycle(&mut params, &mut runners)? {
                    Cycle::Loss(loss) => {
                        history.push(loss);
                        self.report(&history);
                    }
                    Cycle::Diverged(quantity) => {
                        unflatten(&before, &mut params);
                        divergence = Some(Divergence {
                            iteration: history.len() + 1,
                            quantity,
                        });
                        break 'cycles;
                    }
                }
                if single_exact || self.stop(&history, &mut below, &objective, &params, &mut last_grad)? {
                    rule_met = true;
                    break 'cycles;
                }
                if history.len() >= self.max_cycles {
                    break 'cycles;
                }
                if accelerate {
                    states.push(flatten(&params));
                }
            }
            let [x0, x1, x2] = states.as_slice() else { continue };
            let Some(extrapolated) = squarem_point(x0, x1, x2) else { continue };

            let plain_loss = *history.last().expect("two cycles ran");
            unflatten(&extrapolated, &mut params);
            let accepted = match run_cycle(&mut params, &mut runners) {
                Ok(Cycle::Loss(loss)) if loss <= plain_loss => Some(loss),
                _ => None,
            };
            match accepted {
                Some(loss) => history.push(loss),
                None => {
                    unflatten(x2, &mut params);
                    history.push(plain_loss);
                }
            }
            self.report(&history);
            if self.stop(&history, &mut below, &objective, &params, &mut last_grad)? {
                rule_met = true;
                break;
            }
        }

        // A gradient from the last stopping check is at the final parameters.
        let end = match last_grad.filter(|_| rule_met) {
            Some(grad) => grad,
            None => objective.loss_grad(&params)?,
        };
        let max_abs_grad = objective.max_abs_grad(&end, &params);
        let status = match divergence {
            Some(divergence) => divergence.into_status(),
            None if rule_met && max_abs_grad <= self.grad_tol => FitStatus::Converged,
            None if rule_met => FitStatus::Stalled,
            None => FitStatus::MaxIterations,
        };
        // A fit that diverged in its first cycle has only the starting loss to report.
        let loss = match history.last() {
            Some(&loss) => loss,
            None => end.loss,
        };
        Ok(Fit {
            engine: self.name(),
            loss,
            iterations: history.len(),
            loss_history: history,
            status,
            max_abs_grad,
            wall_time: started.elapsed(),
            blocks,
            warnings,
            coverage,
            params,
        })
    }
}

/// GEMM size (objects × outputs × packed normal-matrix entries) from which the normal
/// matrices are formed in parallel.
const PARALLEL_GEMM_WORK: usize = 50_000_000;

/// Outcome of one block-coordinate cycle.
enum Cycle {
    /// The loss after the cycle.
    Loss(f64),
    /// Quantity that became non-finite during the cycle.
    Diverged(String),
}
