//! The model graph: latents, global parameters, deterministic expressions and Gaussian
//! likelihoods, built through [`ModelBuilder`].
//!
//! Every expression is evaluated per object and has a fixed vector size known when the
//! graph is built. Expressions can only refer to earlier ones, so the arena order is a
//! topological order.

use std::collections::HashSet;

use crate::error::GraphError;
use crate::prior::Prior;

/// Handle of a latent variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LatentId(pub(crate) usize);

/// Handle of a global parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(pub(crate) usize);

/// Handle of a deterministic expression (a vector per object).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExprId(pub(crate) usize);

impl ParamId {
    /// Position of the parameter in [`Model::params`].
    pub fn index(self) -> usize {
        self.0
    }
}

impl ExprId {
    /// Position of the expression in [`Model::exprs`].
    pub fn index(self) -> usize {
        self.0
    }
}

impl LatentId {
    /// Position of the latent in [`Model::latents`].
    pub fn index(self) -> usize {
        self.0
    }
}

/// A per-object latent variable, stored in columns `offset..offset + size` of the
/// joint N×K latent matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct LatentNode {
    pub name: String,
    pub size: usize,
    pub offset: usize,
    pub prior: Prior,
}

/// A global parameter: a scalar, a vector `[P]` or a matrix `[P, D]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamNode {
    pub name: String,
    pub shape: Vec<usize>,
    pub prior: Prior,
}

impl ParamNode {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Returns whether the parameter has no elements (never true in a built model).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A deterministic expression, evaluated per object.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// The latent vector itself (the identity).
    Latent(LatentId),
    /// Elements `start..end` of the input.
    Slice { input: ExprId, start: usize, end: usize },
    /// Stacks the inputs end to end.
    Concat(Vec<ExprId>),
    /// Every monomial of the input's elements of total degree ≤ `degree`, the constant 1
    /// first, then graded lexicographic order: for `[a, b]` and degree 2,
    /// `[1, a, b, a², ab, b²]`.
    Poly { input: ExprId, degree: u32 },
    /// `A x` for a parameter matrix `A` of shape `[out, in]`.
    Linear { matrix: ParamId, input: ExprId },
    /// `x + b` for a parameter vector `b`.
    AddBias { input: ExprId, bias: ParamId },
}

/// An observed output: `y ~ Normal(mean, sqrt(err² + s²))` with `err` the reported
/// error and `s` an optional fitted intrinsic scatter.
#[derive(Debug, Clone, PartialEq)]
pub struct ObserveNode {
    pub name: String,
    pub size: usize,
    pub mean: ExprId,
    /// A parameter of shape `[size]` (per element) or `[]` (one for the whole output).
    pub scatter: Option<ParamId>,
}

/// A built, immutable model graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub(crate) latents: Vec<LatentNode>,
    pub(crate) params: Vec<ParamNode>,
    pub(crate) exprs: Vec<(Expr, usize)>,
    pub(crate) observes: Vec<ObserveNode>,
    pub(crate) latent_size: usize,
}

impl Model {
    /// Starts a new model declaration.
    pub fn builder() -> ModelBuilder {
        ModelBuilder::default()
    }

    /// Latent variables in declaration order.
    pub fn latents(&self) -> &[LatentNode] {
        &self.latents
    }

    /// Global parameters in declaration order.
    pub fn params(&self) -> &[ParamNode] {
        &self.params
    }

    /// Expressions with their sizes, in topological order.
    pub fn exprs(&self) -> &[(Expr, usize)] {
        &self.exprs
    }

    /// Observed outputs in declaration order.
    pub fn observes(&self) -> &[ObserveNode] {
        &self.observes
    }

    /// Total latent size K (all latent variables stacked).
    pub fn latent_size(&self) -> usize {
        self.latent_size
    }

    /// Returns the parameter node behind `id`.
    pub fn param(&self, id: ParamId) -> &ParamNode {
        &self.params[id.0]
    }

    /// Returns the expression behind `id`.
    pub fn expr(&self, id: ExprId) -> &Expr {
        &self.exprs[id.0].0
    }

    /// Returns the per-object size of expression `id`.
    pub fn expr_size(&self, id: ExprId) -> usize {
        self.exprs[id.0].1
    }

    /// Finds the parameter called `name`.
    pub fn param_id(&self, name: &str) -> Option<ParamId> {
        self.params.iter().position(|p| p.name == name).map(ParamId)
    }

    /// Finds the latent variable called `name`.
    pub fn latent_id(&self, name: &str) -> Option<LatentId> {
        self.latents.iter().position(|l| l.name == name).map(LatentId)
    }

    /// Finds the observed output called `name`.
    pub fn observe(&self, name: &str) -> Option<&ObserveNode> {
        self.observes.iter().find(|o| o.name == name)
    }

    /// Returns whether expression `id` depends on the latents.
    pub fn depends_on_latents(&self, id: ExprId) -> bool {
        match self.expr(id) {
            Expr::Latent(_) => true,
            Expr::Slice { input, .. } | Expr::Poly { input, .. } => self.depends_on_latents(*input),
            Expr::Linear { input, .. } | Expr::AddBias { input, .. } => {
                self.depends_on_latents(*input)
            }
            Expr::Concat(inputs) => inputs.iter().any(|&e| self.depends_on_latents(e)),
        }
    }

    /// Parameters that expression `id` depends on, in increasing id order.
    pub fn params_of(&self, id: ExprId) -> Vec<ParamId> {
        let mut out = Vec::new();
        self.collect_params(id, &mut out);
        out.sort();
        out.dedup();
        out
    }

    fn collect_params(&self, id: ExprId, out: &mut Vec<ParamId>) {
        match self.expr(id) {
            Expr::Latent(_) => {}
            Expr::Slice { input, .. } | Expr::Poly { input, .. } => self.collect_params(*input, out),
            Expr::Linear { matrix, input } => {
                out.push(*matrix);
                self.collect_params(*input, out);
            }
            Expr::AddBias { input, bias } => {
                out.push(*bias);
                self.collect_params(*input, out);
            }
            Expr::Concat(inputs) => inputs.iter().for_each(|&e| self.collect_params(e, out)),
        }
    }
}

/// Number of monomials of total degree ≤ `degree` in `n` variables: C(n + degree, degree).
pub fn poly_size(n: usize, degree: u32) -> usize {
    let mut size = 1usize;
    for i in 1..=degree as usize {
        size = size * (n + i) / i;
    }
    size
}

/// Builds a [`Model`] one node at a time; every call checks names and sizes.
///
/// This is the runtime API that `lux_model!` emits calls to.
#[derive(Debug, Default)]
pub struct ModelBuilder {
    latents: Vec<LatentNode>,
    params: Vec<ParamNode>,
    exprs: Vec<(Expr, usize)>,
    observes: Vec<ObserveNode>,
    names: HashSet<String>,
}

impl ModelBuilder {
    fn claim(&mut self, name: &str) -> Result<(), GraphError> {
        if !self.names.insert(name.to_string()) {
            return Err(GraphError::DuplicateName {
                name: name.to_string(),
            });
        }
        Ok(())
    }

    fn push(&mut self, expr: Expr, size: usize) -> ExprId {
        self.exprs.push((expr, size));
        ExprId(self.exprs.len() - 1)
    }

    fn size(&self, id: ExprId) -> usize {
        self.exprs[id.0].1
    }

    /// Declares a per-object latent vector of `size` elements; returns its expression.
    pub fn latent(&mut self, name: &str, size: usize, prior: Prior) -> Result<ExprId, GraphError> {
        if size == 0 {
            return Err(GraphError::ZeroSize {
                name: name.to_string(),
            });
        }
        prior.validate(name)?;
        if prior.is_positive() {
            return Err(GraphError::InvalidPrior {
                name: name.to_string(),
                reason: "latents take Normal or Flat priors".to_string(),
            });
        }
        self.claim(name)?;
        let offset = self.latents.iter().map(|l| l.size).sum();
        self.latents.push(LatentNode {
            name: name.to_string(),
            size,
            offset,
            prior,
        });
        let id = LatentId(self.latents.len() - 1);
        Ok(self.push(Expr::Latent(id), size))
    }

    /// Declares a global parameter of `shape` (`[]`, `[P]` or `[P, D]`).
    pub fn param(&mut self, name: &str, shape: &[usize], prior: Prior) -> Result<ParamId, GraphError> {
        if shape.len() > 2 {
            return Err(GraphError::InvalidExpression {
                context: name.to_string(),
                reason: format!("parameters have at most 2 dimensions, got shape {shape:?}"),
            });
        }
        if shape.contains(&0) {
            return Err(GraphError::ZeroSize {
                name: name.to_string(),
            });
        }
        prior.validate(name)?;
        self.claim(name)?;
        self.params.push(ParamNode {
            name: name.to_string(),
            shape: shape.to_vec(),
            prior,
        });
        Ok(ParamId(self.params.len() - 1))
    }

    /// Elements `start..end` of `input`.
    pub fn slice(&mut self, input: ExprId, start: usize, end: usize) -> Result<ExprId, GraphError> {
        let size = self.size(input);
        if start >= end || end > size {
            return Err(GraphError::SliceOutOfRange {
                context: self.describe(input),
                start,
                end,
                size,
            });
        }
        Ok(self.push(Expr::Slice { input, start, end }, end - start))
    }

    /// Stacks the inputs end to end.
    pub fn concat(&mut self, inputs: &[ExprId]) -> Result<ExprId, GraphError> {
        if inputs.is_empty() {
            return Err(GraphError::InvalidExpression {
                context: "concat".to_string(),
                reason: "concatenation needs at least one input".to_string(),
            });
        }
        let size = inputs.iter().map(|&e| self.size(e)).sum();
        Ok(self.push(Expr::Concat(inputs.to_vec()), size))
    }

    /// Polynomial features of `input` up to total degree `degree` (see [`Expr::Poly`]).
    pub fn poly(&mut self, input: ExprId, degree: u32) -> Result<ExprId, GraphError> {
        if degree == 0 {
            return Err(GraphError::InvalidExpression {
                context: self.describe(input),
                reason: "polynomial degree must be at least 1".to_string(),
            });
        }
        let size = poly_size(self.size(input), degree);
        Ok(self.push(Expr::Poly { input, degree }, size))
    }

    /// `A x` for a parameter matrix `A` of shape `[out, in]` with `in` the size of `x`.
    pub fn linear(&mut self, matrix: ParamId, input: ExprId) -> Result<ExprId, GraphError> {
        let node = &self.params[matrix.0];
        let in_size = self.size(input);
        if node.shape.len() != 2 {
            return Err(GraphError::InvalidExpression {
                context: node.name.clone(),
                reason: format!(
                    "a linear map needs a matrix parameter of shape [out, in], but `{}` has shape {:?}",
                    node.name, node.shape
                ),
            });
        }
        if node.shape[1] != in_size {
            return Err(GraphError::ShapeMismatch {
                context: format!("{} * {}", node.name, self.describe(input)),
                left_what: format!("`{}` ({}×{}) expects an input that", node.name, node.shape[0], node.shape[1]),
                left: node.shape[1],
                right_what: format!("`{}`", self.describe(input)),
                right: in_size,
            });
        }
        let out = node.shape[0];
        Ok(self.push(Expr::Linear { matrix, input }, out))
    }

    /// `x + b` for a parameter vector `b` of the size of `x`.
    pub fn add_bias(&mut self, input: ExprId, bias: ParamId) -> Result<ExprId, GraphError> {
        let node = &self.params[bias.0];
        let size = self.size(input);
        if node.shape != [size] {
            return Err(GraphError::ShapeMismatch {
                context: format!("{} + {}", self.describe(input), node.name),
                left_what: format!("`{}`", self.describe(input)),
                left: size,
                right_what: format!("bias `{}` (shape {:?})", node.name, node.shape),
                right: node.shape.iter().product(),
            });
        }
        Ok(self.push(Expr::AddBias { input, bias }, size))
    }

    /// `A x + b`.
    pub fn affine(&mut self, matrix: ParamId, input: ExprId, bias: ParamId) -> Result<ExprId, GraphError> {
        let linear = self.linear(matrix, input)?;
        self.add_bias(linear, bias)
    }

    /// Declares the observed output `name ~ Normal(mean, sqrt(err² + scatter²))`.
    ///
    /// `scatter`, when given, must be a parameter of shape `[size]` or `[]` with a
    /// HalfNormal or Flat prior.
    pub fn observe(&mut self, name: &str, mean: ExprId, scatter: Option<ParamId>) -> Result<(), GraphError> {
        let size = self.size(mean);
        if let Some(s) = scatter {
            let node = &self.params[s.0];
            if !(node.shape.is_empty() || node.shape == [size]) {
                return Err(GraphError::ShapeMismatch {
                    context: format!("scatter of `{name}`"),
                    left_what: format!("output `{name}`"),
                    left: size,
                    right_what: format!("scatter `{}` (shape {:?})", node.name, node.shape),
                    right: node.shape.iter().product(),
                });
            }
            if matches!(node.prior, Prior::Normal { .. }) {
                return Err(GraphError::InvalidPrior {
                    name: node.name.clone(),
                    reason: "an intrinsic scatter is a scale: give it a HalfNormal or Flat prior".to_string(),
                });
            }
        }
        self.claim(name)?;
        self.observes.push(ObserveNode {
            name: name.to_string(),
            size,
            mean,
            scatter,
        });
        Ok(())
    }

    /// Checks the whole graph and returns the model.
    pub fn build(self) -> Result<Model, GraphError> {
        if self.latents.is_empty() {
            return Err(GraphError::Empty { what: "latent variable" });
        }
        if self.observes.is_empty() {
            return Err(GraphError::Empty { what: "observed output" });
        }
        let latent_size = self.latents.iter().map(|l| l.size).sum();
        let model = Model {
            latents: self.latents,
            params: self.params,
            exprs: self.exprs,
            observes: self.observes,
            latent_size,
        };
        for (index, latent) in model.latents.iter().enumerate() {
            let used = model
                .observes
                .iter()
                .any(|o| model.uses_latent(o.mean, LatentId(index)));
            if !used {
                return Err(GraphError::UnusedLatent {
                    name: latent.name.clone(),
                });
            }
        }
        Ok(model)
    }

    fn describe(&self, id: ExprId) -> String {
        describe_expr(&self.exprs, &self.latents, &self.params, id)
    }
}

impl Model {
    fn uses_latent(&self, id: ExprId, latent: LatentId) -> bool {
        match self.expr(id) {
            Expr::Latent(l) => *l == latent,
            Expr::Slice { input, .. }
            | Expr::Poly { input, .. }
            | Expr::Linear { input, .. }
            | Expr::AddBias { input, .. } => self.uses_latent(*input, latent),
            Expr::Concat(inputs) => inputs.iter().any(|&e| self.uses_latent(e, latent)),
        }
    }

    /// Writes expression `id` in readable form, such as `A * z[0..4] + b`.
    pub fn describe(&self, id: ExprId) -> String {
        describe_expr(&self.exprs, &self.latents, &self.params, id)
    }
}

fn describe_expr(exprs: &[(Expr, usize)], latents: &[LatentNode], params: &[ParamNode], id: ExprId) -> String {
    let recurse = |e: ExprId| describe_expr(exprs, latents, params, e);
    match &exprs[id.0].0 {
        Expr::Latent(l) => latents[l.0].name.clone(),
        Expr::Slice { input, start, end } => format!("{}[{start}..{end}]", recurse(*input)),
        Expr::Concat(inputs) => {
            let parts: Vec<String> = inputs.iter().map(|&e| recurse(e)).collect();
            format!("concat({})", parts.join(", "))
        }
        Expr::Poly { input, degree } => format!("poly({}, {degree})", recurse(*input)),
        Expr::Linear { matrix, input } => format!("{} * {}", params[matrix.0].name, recurse(*input)),
        Expr::AddBias { input, bias } => format!("{} + {}", recurse(*input), params[bias.0].name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lux(k: usize, l: usize, p: usize) -> Result<Model, GraphError> {
        let mut b = Model::builder();
        let z = b.latent("z", k, Prior::standard_normal())?;
        let a = b.param("A", &[l, k], Prior::standard_normal())?;
        let bb = b.param("B", &[p, k], Prior::standard_normal())?;
        let label = b.linear(a, z)?;
        let flux = b.linear(bb, z)?;
        b.observe("label", label, None)?;
        b.observe("flux", flux, None)?;
        b.build()
    }

    #[test]
    fn lux_graph_builds() {
        let model = lux(8, 2, 128).unwrap();
        assert_eq!(model.latent_size(), 8);
        assert_eq!(model.observe("flux").unwrap().size, 128);
        assert_eq!(model.describe(model.observe("label").unwrap().mean), "A * z");
    }

    #[test]
    fn linear_size_mismatch_names_both_sizes() {
        let mut b = Model::builder();
        let z = b.latent("z", 8, Prior::standard_normal()).unwrap();
        let a = b.param("A", &[2, 7], Prior::standard_normal()).unwrap();
        let err = b.linear(a, z).unwrap_err();
        let message = err.to_string();
        assert!(message.contains('7'), "{message}");
        assert!(message.contains('8'), "{message}");
        assert!(message.contains("A * z"), "{message}");
    }

    #[test]
    fn duplicate_name_is_rejected() {
        let mut b = Model::builder();
        b.latent("z", 2, Prior::Flat).unwrap();
        assert_eq!(
            b.param("z", &[2], Prior::Flat).unwrap_err(),
            GraphError::DuplicateName { name: "z".into() }
        );
    }

    #[test]
    fn unused_latent_is_rejected() {
        let mut b = Model::builder();
        let z = b.latent("z", 2, Prior::Flat).unwrap();
        b.latent("w", 2, Prior::Flat).unwrap();
        b.observe("label", z, None).unwrap();
        assert_eq!(b.build().unwrap_err(), GraphError::UnusedLatent { name: "w".into() });
    }

    #[test]
    fn poly_sizes() {
        assert_eq!(poly_size(2, 2), 6);
        assert_eq!(poly_size(3, 2), 10);
        assert_eq!(poly_size(3, 1), 4);
        assert_eq!(poly_size(2, 3), 10);
    }

    #[test]
    fn slice_out_of_range() {
        let mut b = Model::builder();
        let z = b.latent("z", 4, Prior::Flat).unwrap();
        assert!(matches!(
            b.slice(z, 2, 6).unwrap_err(),
            GraphError::SliceOutOfRange { size: 4, .. }
        ));
    }
}
