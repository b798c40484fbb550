//! Structural analysis of a model graph: its parameter blocks, which of them are
//! linear-Gaussian (solvable exactly by weighted least squares), and why.
//!
//! Everything here is read off the graph symbolically; nothing is probed numerically.
//! A block's conditional problem is linear-Gaussian when its parameters enter every
//! mean they appear in linearly, no variance depends on them, and their priors are
//! Normal or flat.

use ndarray::{Array1, Array2, Ix1, Ix2, s};

use crate::graph::{Expr, ExprId, LatentId, Model, ParamId};
use crate::params::Params;
use crate::prior::Prior;

/// Contents of a block.
#[derive(Debug, Clone, PartialEq)]
pub enum BlockKind {
    /// Every latent of every object (one small problem per object).
    Latents,
    /// The parameters of one output's mean, solved together (one small problem per
    /// output element when the block is closed form).
    Mean { output: usize },
    /// The intrinsic scatter of one output.
    Scatter { output: usize },
}

/// One block of the block-coordinate scheme.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// A readable name: `latents`, `flux:mean`, `flux:scatter`.
    pub name: String,
    pub kind: BlockKind,
    /// Global parameters of the block (empty for the latents).
    pub params: Vec<ParamId>,
    /// Whether the conditional problem is linear-Gaussian.
    pub closed_form: bool,
    /// Reason the block is or is not closed form, in plain words.
    pub reason: String,
}

/// The form of a closed-form mean block on rows `rows` of the output:
/// `mean[rows] = A x + b` with `x` free of the block's parameters. At least one of
/// `matrix` and `bias` is present.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearLayer {
    /// The output elements this layer predicts (all of them unless the mean is a
    /// concatenation of branches).
    pub rows: std::ops::Range<usize>,
    pub matrix: Option<ParamId>,
    /// The features `x` feeding the matrix (absent for a bias alone).
    pub features: Option<ExprId>,
    pub bias: Option<ParamId>,
    /// For a bias alone, `x + b`: the expression `x`, subtracted from the data before
    /// solving for `b`.
    pub offset: Option<ExprId>,
}

/// The symmetry `z → M z`, `A_o → A_o M_o⁻¹` under which the data term is unchanged,
/// present when the graph proves it (see [`Structure::symmetry`]).
///
/// Output o reads the latent columns `columns` only, so M must map those columns onto
/// themselves: `M[i, j] = 0` for i in the columns and j outside. `M_o` is M restricted to
/// the columns. Without slices every output reads every column and M is any invertible
/// matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct LatentSymmetry {
    pub latent: LatentId,
    /// Prior precision of the latents (1/σ²).
    pub latent_precision: f64,
    /// Each output's matrix, its prior precision, and the latent columns it reads.
    pub matrices: Vec<SymmetryMap>,
}

/// One output's linear map in a [`LatentSymmetry`].
#[derive(Debug, Clone, PartialEq)]
pub struct SymmetryMap {
    pub matrix: ParamId,
    /// Prior precision of the matrix elements (1/σ²).
    pub precision: f64,
    /// The latent columns the map reads.
    pub columns: std::ops::Range<usize>,
    /// The output's bias `b_o` in `A_o z + b_o` and its prior precision, when it has one
    /// with a zero-mean Normal or a flat (precision 0) prior.
    pub bias: Option<(ParamId, f64)>,
}

impl LatentSymmetry {
    /// Returns whether every output reads every latent column, so that M is any
    /// invertible matrix and the rebalancing step has a closed form.
    pub fn is_full(&self, latent_size: usize) -> bool {
        self.matrices.iter().all(|m| m.columns == (0..latent_size))
    }

    /// Returns whether the data term is also unchanged by the translation `z → z + c`,
    /// `b_o → b_o − A_o c`: every output reads every latent column and has a bias.
    pub fn allows_translation(&self, latent_size: usize) -> bool {
        self.is_full(latent_size) && self.matrices.iter().all(|m| m.bias.is_some())
    }

    /// Returns whether `M[row, column]` may be nonzero.
    pub fn allows(&self, row: usize, column: usize) -> bool {
        self.matrices
            .iter()
            .all(|m| !(m.columns.contains(&row) && !m.columns.contains(&column)))
    }
}

/// The block structure of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Structure {
    pub blocks: Vec<Block>,
    /// The final linear layers of each output's mean (by output index), when that
    /// output's mean block is closed form: one layer, or one per branch of a
    /// concatenation (branches without parameters are left out).
    pub layers: Vec<Option<Vec<LinearLayer>>>,
    /// Present when every mean is `A_o z` or `A_o z + b_o` for one latent `z` with a
    /// zero-mean Normal prior and every `A_o` has its own zero-mean Normal prior: then
    /// only the priors pick the basis of the latent space.
    pub symmetry: Option<LatentSymmetry>,
}

impl Structure {
    /// Returns the block of the latents.
    pub fn latent_block(&self) -> &Block {
        self.blocks
            .iter()
            .find(|b| b.kind == BlockKind::Latents)
            .expect("every model has a latent block")
    }
}

impl Model {
    /// Splits the model into blocks and proves which are linear-Gaussian.
    pub fn structure(&self) -> Structure {
        let mut blocks = vec![self.latent_block()];
        let mut layers = vec![None; self.observes.len()];

        for (index, obs) in self.observes.iter().enumerate() {
            let params = self.params_of(obs.mean);
            if !params.is_empty() {
                let (closed_form, reason, layer) = self.mean_block(index, &params);
                layers[index] = layer;
                blocks.push(Block {
                    name: format!("{}:mean", obs.name),
                    kind: BlockKind::Mean { output: index },
                    params,
                    closed_form,
                    reason,
                });
            }
            if let Some(scatter) = obs.scatter {
                blocks.push(Block {
                    name: format!("{}:scatter", obs.name),
                    kind: BlockKind::Scatter { output: index },
                    params: vec![scatter],
                    closed_form: false,
                    reason: format!(
                        "`{}` is an intrinsic scatter: it enters the variance of `{}`, so the conditional problem is not linear-Gaussian",
                        self.param(scatter).name,
                        obs.name
                    ),
                });
            }
        }

        Structure {
            symmetry: self.latent_symmetry(),
            blocks,
            layers,
        }
    }

    fn latent_block(&self) -> Block {
        let mut problems = Vec::new();
        for obs in &self.observes {
            if let Err(why) = self.affine_in_latents(obs.mean) {
                problems.push(format!("the mean of `{}` is not affine in the latents: {why}", obs.name));
            }
        }
        for latent in &self.latents {
            if latent.prior.gaussian().is_none() {
                problems.push(format!("latent `{}` has a prior that is neither Normal nor flat", latent.name));
            }
        }
        let closed_form = problems.is_empty();
        let reason = if closed_form {
            "every mean is affine in the latents, no variance depends on them, and their priors are Normal or flat".to_string()
        } else {
            problems.join("; ")
        };
        Block {
            name: "latents".to_string(),
            kind: BlockKind::Latents,
            params: Vec::new(),
            closed_form,
            reason,
        }
    }

    /// `Ok` when expression `id` is affine in the latents, otherwise the reason.
    pub fn affine_in_latents(&self, id: ExprId) -> Result<(), String> {
        match self.expr(id) {
            Expr::Latent(_) => Ok(()),
            Expr::Slice { input, .. } | Expr::Linear { input, .. } | Expr::AddBias { input, .. } => {
                self.affine_in_latents(*input)
            }
            Expr::Concat(inputs) => inputs.iter().try_for_each(|&e| self.affine_in_latents(e)),
            Expr::Poly { degree, .. } if *degree >= 2 => Err(format!(
                "`{}` has products of latents (degree {degree})",
                self.describe(id)
            )),
            Expr::Poly { input, .. } => self.affine_in_latents(*input),
        }
    }

    fn mean_block(&self, output: usize, params: &[ParamId]) -> (bool, String, Option<Vec<LinearLayer>>) {
        let obs = &self.observes[output];

        let shared: Vec<String> = params
            .iter()
            .filter(|&&p| {
                self.observes.iter().enumerate().any(|(other, o)| {
                    other != output && (self.params_of(o.mean).contains(&p) || o.scatter == Some(p))
                }) || obs.scatter == Some(p)
            })
            .map(|&p| format!("`{}`", self.param(p).name))
            .collect();
        if !shared.is_empty() {
            return (
                false,
                format!(
                    "{} also enter another mean or a variance, so the rows of `{}` do not separate",
                    shared.join(", "),
                    obs.name
                ),
                None,
            );
        }

        let layers = match self.final_linear_layers(obs.mean) {
            Ok(layers) => layers,
            Err(why) => return (false, why, None),
        };

        for &p in params {
            let node = self.param(p);
            if node.prior.gaussian().is_none() {
                return (
                    false,
                    format!("`{}` has a HalfNormal prior, which is not Gaussian", node.name),
                    None,
                );
            }
        }

        let names: Vec<String> = params.iter().map(|&p| format!("`{}`", self.param(p).name)).collect();
        let verb = if names.len() == 1 { "enters" } else { "enter" };
        (
            true,
            format!(
                "{} {verb} `{}` linearly, no variance depends on them, and their priors are Normal or flat",
                names.join(" and "),
                obs.name
            ),
            Some(layers),
        )
    }

    /// Splits a mean into final linear layers: `A x`, `A x + b` or `x + b` at the top, or
    /// a concatenation of such branches, each branch with its own parameters.
    fn final_linear_layers(&self, mean: ExprId) -> Result<Vec<LinearLayer>, String> {
        let Expr::Concat(inputs) = self.expr(mean) else {
            return Ok(vec![self.final_linear_layer(mean, 0..self.expr_size(mean))?]);
        };
        let mut layers = Vec::new();
        let mut start = 0;
        let mut seen: Vec<ParamId> = Vec::new();
        for &branch in inputs {
            let size = self.expr_size(branch);
            let params = self.params_of(branch);
            if !params.is_empty() {
                if let Some(p) = params.iter().find(|p| seen.contains(p)) {
                    return Err(format!(
                        "`{}` appears in two branches of `{}`, so its rows do not separate",
                        self.param(*p).name,
                        self.describe(mean)
                    ));
                }
                seen.extend(params);
                layers.push(self.final_linear_layer(branch, start..start + size)?);
            }
            start += size;
        }
        Ok(layers)
    }

    /// Recognizes `A x`, `A x + b` and `x + b` at the top of an expression, with `x`
    /// free of the layer's own parameters.
    fn final_linear_layer(&self, mean: ExprId, rows: std::ops::Range<usize>) -> Result<LinearLayer, String> {
        let (inner, bias) = match self.expr(mean) {
            Expr::AddBias { input, bias } => (*input, Some(*bias)),
            _ => (mean, None),
        };
        let (matrix, features) = match self.expr(inner) {
            Expr::Linear { matrix, input } => (Some(*matrix), Some(*input)),
            _ if bias.is_some() => (None, Some(inner)),
            _ => {
                return Err(format!(
                    "the parameters of `{}` are not in a final linear layer `A x + b`",
                    self.describe(mean)
                ));
            }
        };
        if let Some(x) = features {
            let inside = self.params_of(x);
            if !inside.is_empty() {
                let names: Vec<String> = inside.iter().map(|&p| format!("`{}`", self.param(p).name)).collect();
                return Err(format!(
                    "{} inside `{}` multiply the layer's own parameters, so the mean is not linear in them jointly",
                    names.join(", "),
                    self.describe(mean)
                ));
            }
        }
        Ok(LinearLayer {
            rows,
            matrix,
            features: if matrix.is_some() { features } else { None },
            bias,
            offset: if matrix.is_some() { None } else { features },
        })
    }

    fn latent_symmetry(&self) -> Option<LatentSymmetry> {
        if self.latents.len() != 1 {
            return None;
        }
        let latent = &self.latents[0];
        let latent_precision = match latent.prior {
            Prior::Normal { mean, scale } if mean == 0.0 => 1.0 / (scale * scale),
            _ => return None,
        };
        let mut matrices = Vec::new();
        for obs in &self.observes {
            let (linear, bias) = match self.expr(obs.mean) {
                Expr::AddBias { input, bias } => {
                    let precision = match self.param(*bias).prior {
                        Prior::Normal { mean, scale } if mean == 0.0 => Some(1.0 / (scale * scale)),
                        Prior::Flat => Some(0.0),
                        _ => None,
                    };
                    (*input, precision.map(|p| (*bias, p)))
                }
                _ => (obs.mean, None),
            };
            let Expr::Linear { matrix, input } = self.expr(linear) else {
                return None;
            };
            let columns = match self.expr(*input) {
                Expr::Latent(_) => 0..self.latent_size,
                Expr::Slice { input, start, end } if matches!(self.expr(*input), Expr::Latent(_)) => *start..*end,
                _ => return None,
            };
            let precision = match self.param(*matrix).prior {
                Prior::Normal { mean, scale } if mean == 0.0 => 1.0 / (scale * scale),
                _ => return None,
            };
            if matrices.iter().any(|m: &SymmetryMap| m.matrix == *matrix) {
                return None;
            }
            matrices.push(SymmetryMap {
                matrix: *matrix,
                precision,
                columns,
                bias,
            });
        }
        Some(LatentSymmetry {
            latent: LatentId(0),
            latent_precision,
            matrices,
        })
    }

    /// Computes the design matrix `J` (size×K) and offset `c` of an expression that is affine in
    /// the latents: `value = J z + c` for every object. `None` when it is not affine.
    pub fn latent_design(&self, params: &Params, id: ExprId) -> Option<(Array2<f64>, Array1<f64>)> {
        let size = self.expr_size(id);
        let k = self.latent_size();
        match self.expr(id) {
            Expr::Latent(l) => {
                let node = &self.latents[l.0];
                let mut j = Array2::zeros((size, k));
                for i in 0..size {
                    j[[i, node.offset + i]] = 1.0;
                }
                Some((j, Array1::zeros(size)))
            }
            Expr::Slice { input, start, end } => {
                let (j, c) = self.latent_design(params, *input)?;
                Some((j.slice(s![*start..*end, ..]).to_owned(), c.slice(s![*start..*end]).to_owned()))
            }
            Expr::Concat(inputs) => {
                let mut j = Array2::zeros((size, k));
                let mut c = Array1::zeros(size);
                let mut row = 0;
                for &e in inputs {
                    let (je, ce) = self.latent_design(params, e)?;
                    let n = je.nrows();
                    j.slice_mut(s![row..row + n, ..]).assign(&je);
                    c.slice_mut(s![row..row + n]).assign(&ce);
                    row += n;
                }
                Some((j, c))
            }
            Expr::Poly { .. } => None,
            Expr::Linear { matrix, input } => {
                let (j, c) = self.latent_design(params, *input)?;
                let a = params
                    .get(&self.param(*matrix).name)?
                    .view()
                    .into_dimensionality::<Ix2>()
                    .ok()?;
                Some((a.dot(&j), a.dot(&c)))
            }
            Expr::AddBias { input, bias } => {
                let (j, c) = self.latent_design(params, *input)?;
                let b = params
                    .get(&self.param(*bias).name)?
                    .view()
                    .into_dimensionality::<Ix1>()
                    .ok()?;
                Some((j, c + &b))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Model;

    fn block<'a>(s: &'a Structure, name: &str) -> &'a Block {
        s.blocks.iter().find(|b| b.name == name).unwrap()
    }

    #[test]
    fn lux_is_closed_form_with_symmetry() {
        let mut b = Model::builder();
        let z = b.latent("z", 3, Prior::standard_normal()).unwrap();
        let a = b.param("A", &[2, 3], Prior::standard_normal()).unwrap();
        let bb = b.param("B", &[5, 3], Prior::normal(0.0, 2.0)).unwrap();
        let label = b.linear(a, z).unwrap();
        let flux = b.linear(bb, z).unwrap();
        b.observe("label", label, None).unwrap();
        b.observe("flux", flux, None).unwrap();
        let s = b.build().unwrap().structure();
        assert!(s.blocks.iter().all(|b| b.closed_form));
        assert_eq!(s.blocks.len(), 3);
        let sym = s.symmetry.unwrap();
        assert_eq!(sym.matrices.len(), 2);
        assert_eq!(sym.matrices[1].precision, 0.25);
        assert!(sym.is_full(3));
    }

    #[test]
    fn affine_and_scatter_blocks() {
        let mut b = Model::builder();
        let z = b.latent("z", 3, Prior::standard_normal()).unwrap();
        let a = b.param("A", &[4, 3], Prior::standard_normal()).unwrap();
        let c = b.param("c", &[4], Prior::Flat).unwrap();
        let s = b.param("s", &[4], Prior::half_normal(1.0)).unwrap();
        let mean = b.affine(a, z, c).unwrap();
        b.observe("flux", mean, Some(s)).unwrap();
        let st = b.build().unwrap().structure();
        assert!(block(&st, "latents").closed_form);
        assert!(block(&st, "flux:mean").closed_form);
        assert!(!block(&st, "flux:scatter").closed_form);
        assert!(block(&st, "flux:scatter").reason.contains("variance"));
        assert!(st.symmetry.is_some());
    }

    #[test]
    fn poly_features_are_not_closed_form_in_latents() {
        let mut b = Model::builder();
        let y = b.latent("y", 2, Prior::Flat).unwrap();
        let theta = b.param("theta", &[5, 6], Prior::Flat).unwrap();
        let features = b.poly(y, 2).unwrap();
        let flux = b.linear(theta, features).unwrap();
        b.observe("label", y, None).unwrap();
        b.observe("flux", flux, None).unwrap();
        let st = b.build().unwrap().structure();
        assert!(!block(&st, "latents").closed_form);
        assert!(block(&st, "latents").reason.contains("poly(y, 2)"));
        assert!(block(&st, "flux:mean").closed_form);
        assert!(st.symmetry.is_none());
    }

    #[test]
    fn half_normal_matrix_is_not_closed_form() {
        let mut b = Model::builder();
        let z = b.latent("z", 2, Prior::standard_normal()).unwrap();
        let a = b.param("A", &[3, 2], Prior::half_normal(1.0)).unwrap();
        let mean = b.linear(a, z).unwrap();
        b.observe("flux", mean, None).unwrap();
        let st = b.build().unwrap().structure();
        assert!(!block(&st, "flux:mean").closed_form);
        assert!(block(&st, "flux:mean").reason.contains("HalfNormal"));
    }

    #[test]
    fn slices_and_concat_design() {
        let mut b = Model::builder();
        let z = b.latent("z", 4, Prior::standard_normal()).unwrap();
        let head = b.slice(z, 0, 2).unwrap();
        let tail = b.slice(z, 2, 4).unwrap();
        let a = b.param("A", &[2, 2], Prior::standard_normal()).unwrap();
        let bb = b.param("B", &[3, 2], Prior::standard_normal()).unwrap();
        let la = b.linear(a, head).unwrap();
        let lb = b.linear(bb, tail).unwrap();
        let both = b.concat(&[la, lb]).unwrap();
        b.observe("all", both, None).unwrap();
        let model = b.build().unwrap();
        let st = model.structure();
        assert!(block(&st, "latents").closed_form);
        assert!(block(&st, "all:mean").closed_form);
        let layers = st.layers[0].as_ref().unwrap();
        assert_eq!(layers.len(), 2);
        assert_eq!(layers[1].rows, 2..5);
        assert!(st.symmetry.is_none());

        let params = model
            .sample_params(1, 3)
            .with("A", ndarray::array![[1.0, 2.0], [3.0, 4.0]].into_dyn());
        let (j, c) = model.latent_design(&params, both).unwrap();
        assert_eq!(j.dim(), (5, 4));
        assert_eq!(j.row(1).to_vec(), vec![3.0, 4.0, 0.0, 0.0]);
        assert_eq!(j[[2, 0]], 0.0);
        assert!(c.iter().all(|&x| x == 0.0));
    }

    #[test]
    fn slice_feeding_linear_is_closed_form() {
        let mut b = Model::builder();
        let z = b.latent("z", 4, Prior::standard_normal()).unwrap();
        let head = b.slice(z, 0, 2).unwrap();
        let a = b.param("A", &[2, 2], Prior::standard_normal()).unwrap();
        let m = b.param("B", &[6, 4], Prior::standard_normal()).unwrap();
        let label = b.linear(a, head).unwrap();
        let flux = b.linear(m, z).unwrap();
        b.observe("label", label, None).unwrap();
        b.observe("flux", flux, None).unwrap();
        let st = b.build().unwrap().structure();
        assert!(block(&st, "latents").closed_form);
        assert!(block(&st, "label:mean").closed_form);
        assert!(block(&st, "flux:mean").closed_form);
        let sym = st.symmetry.unwrap();
        assert!(!sym.is_full(4), "a slice restricts the symmetry");
        assert!(sym.allows(2, 0), "flux rows may mix in label columns");
        assert!(!sym.allows(0, 2), "label columns must stay among themselves");
    }

    #[test]
    fn matrix_shared_by_branches_not_closed_form() {
        let mut b = Model::builder();
        let z = b.latent("z", 2, Prior::standard_normal()).unwrap();
        let a = b.param("A", &[3, 2], Prior::standard_normal()).unwrap();
        let first = b.linear(a, z).unwrap();
        let second = b.linear(a, z).unwrap();
        let both = b.concat(&[first, second]).unwrap();
        b.observe("flux", both, None).unwrap();
        let st = b.build().unwrap().structure();
        assert!(!block(&st, "flux:mean").closed_form);
        assert!(block(&st, "flux:mean").reason.contains("two branches"));
    }

    #[test]
    fn bias_alone_keeps_its_offset() {
        let mut b = Model::builder();
        let y = b.latent("y", 2, Prior::Flat).unwrap();
        let c = b.param("c", &[2], Prior::Flat).unwrap();
        let mean = b.add_bias(y, c).unwrap();
        b.observe("label", mean, None).unwrap();
        let st = b.build().unwrap().structure();
        let layer = &st.layers[0].as_ref().unwrap()[0];
        assert_eq!(layer.matrix, None);
        assert_eq!(layer.offset, Some(y));
        assert_eq!(layer.bias, Some(c));
    }

    #[test]
    fn nested_linear_maps_are_not_closed_form() {
        let mut b = Model::builder();
        let z = b.latent("z", 2, Prior::standard_normal()).unwrap();
        let a = b.param("A", &[3, 2], Prior::standard_normal()).unwrap();
        let c = b.param("C", &[4, 3], Prior::standard_normal()).unwrap();
        let inner = b.linear(a, z).unwrap();
        let outer = b.linear(c, inner).unwrap();
        b.observe("flux", outer, None).unwrap();
        let st = b.build().unwrap().structure();
        assert!(!block(&st, "flux:mean").closed_form);
        assert!(block(&st, "latents").closed_form);
    }
}
