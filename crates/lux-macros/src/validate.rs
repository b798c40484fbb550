//! Stage 2: names, kinds and sizes, checked before any code is written.
//!
//! Every mistake is collected with the span of the token at fault. A model without
//! mistakes becomes a [`Plan`]: the builder calls in the order they run, with the sizes
//! inferred from `_` filled in.

use std::collections::{BTreeSet, HashMap};

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::{Attribute, Ident};

use crate::ast::{
    Bound, Expr, ExprKind, Kind, ModelDecl, Noise, Prior, PriorKind, Shape, SizeTok, Stmt,
};
use crate::size::Size;

/// Names the generated type uses itself.
const RESERVED: [(&str, &str); 3] = [
    ("new", "the generated constructor"),
    ("model", "the generated accessor of the built graph"),
    ("err", "the reported errors in `Normal(mean, err)`"),
];

/// A checked model: what code generation needs and nothing it must check.
pub struct Plan<'a> {
    pub decl: &'a ModelDecl,
    pub latents: Vec<LatentPlan<'a>>,
    pub params: Vec<ParamPlan<'a>>,
    pub ops: Vec<Op>,
}

pub struct LatentPlan<'a> {
    pub name: &'a Ident,
    pub docs: &'a [Attribute],
    pub size: String,
    pub prior: String,
}

pub struct ParamPlan<'a> {
    pub name: &'a Ident,
    pub docs: &'a [Attribute],
    pub rank: usize,
    pub shape: String,
    pub prior: String,
}

/// One builder call. `out`, `input` and friends index generated locals: expressions by
/// creation order, parameters by declaration order.
pub enum Op {
    Latent {
        out: usize,
        name: String,
        size: Size,
        prior: PriorKind,
    },
    Param {
        param: usize,
        name: String,
        shape: Vec<Size>,
        prior: PriorKind,
    },
    Slice {
        out: usize,
        input: usize,
        start: Size,
        end: Size,
    },
    Concat {
        out: usize,
        inputs: Vec<usize>,
    },
    Poly {
        out: usize,
        input: usize,
        degree: u32,
    },
    Linear {
        out: usize,
        matrix: usize,
        input: usize,
    },
    AddBias {
        out: usize,
        input: usize,
        bias: usize,
    },
    Affine {
        out: usize,
        matrix: usize,
        input: usize,
        bias: usize,
    },
    Observe {
        name: String,
        mean: usize,
        scatter: Option<usize>,
    },
}

/// Checks `decl` and returns its plan, or every error found.
pub fn check(decl: &ModelDecl) -> Result<Plan<'_>, Vec<syn::Error>> {
    let mut checker = Checker::new(decl);
    checker.header();
    checker.register_statements();
    checker.declarations();
    checker.definitions();
    checker.final_checks();
    if !checker.errors.is_empty() {
        return Err(checker.errors);
    }
    Ok(checker.into_plan())
}

/// A declared name and its kind. `index` is `None` for a statement that failed to parse.
#[derive(Clone, Copy)]
struct Named {
    kind: Kind,
    index: Option<usize>,
}

/// One entry of a parameter shape.
#[derive(Clone)]
enum Entry {
    Known(Size),
    /// `_`, not yet read off a use.
    Hole(Span),
    /// Already reported as an error.
    Unknown,
}

struct LatentInfo<'a> {
    name: &'a Ident,
    docs: &'a [Attribute],
    size: Option<Size>,
    prior: Option<&'a Prior>,
    local: usize,
}

struct ParamInfo<'a> {
    name: &'a Ident,
    docs: &'a [Attribute],
    shape: Option<Vec<Entry>>,
    prior: Option<&'a Prior>,
    emitted: bool,
}

/// What an expression evaluates to: its size, the latents it depends on and the local
/// holding it (`None` where a part is in error).
#[derive(Clone, Default)]
struct Value {
    size: Option<Size>,
    latents: BTreeSet<usize>,
    local: Option<usize>,
}

struct Checker<'a> {
    decl: &'a ModelDecl,
    symbols: Vec<Ident>,
    errors: Vec<syn::Error>,
    names: HashMap<String, Named>,
    latents: Vec<LatentInfo<'a>>,
    params: Vec<ParamInfo<'a>>,
    lets: Vec<Option<Value>>,
    used_latents: BTreeSet<usize>,
    /// Whether an expression named something undeclared.
    unresolved: bool,
    ops: Vec<Op>,
    next_local: usize,
    memo: HashMap<String, usize>,
}

fn key(ident: &Ident) -> String {
    ident.unraw().to_string()
}

impl<'a> Checker<'a> {
    fn new(decl: &'a ModelDecl) -> Self {
        Checker {
            decl,
            symbols: decl.dims.iter().map(|d| d.symbol.clone()).collect(),
            errors: Vec::new(),
            names: HashMap::new(),
            latents: Vec::new(),
            params: Vec::new(),
            lets: Vec::new(),
            used_latents: BTreeSet::new(),
            unresolved: false,
            ops: Vec::new(),
            next_local: 0,
            memo: HashMap::new(),
        }
    }

    fn error(&mut self, span: Span, message: impl Into<String>) {
        self.errors.push(syn::Error::new(span, message.into()));
    }

    fn error_at(&mut self, tokens: impl ToTokens, message: impl Into<String>) {
        self.errors
            .push(syn::Error::new_spanned(tokens, message.into()));
    }

    fn render(&self, size: &Size) -> String {
        size.render(&self.symbols)
    }

    // ---- names -------------------------------------------------------------------

    fn header(&mut self) {
        let mut args: HashMap<String, &Ident> = HashMap::new();
        for (index, dim) in self.decl.dims.iter().enumerate() {
            if args.insert(key(&dim.arg), &dim.arg).is_some() {
                self.error(
                    dim.arg.span(),
                    format!("duplicate constructor argument `{}`", dim.arg),
                );
            }
            self.register(&dim.symbol, Kind::Dim, Some(index));
        }
    }

    fn register_statements(&mut self) {
        let mut counts = HashMap::new();
        for stmt in &self.decl.stmts {
            let kind = stmt.kind();
            let index = match stmt {
                Stmt::Broken { .. } => None,
                _ => {
                    let count = counts.entry(kind).or_insert(0usize);
                    *count += 1;
                    Some(*count - 1)
                }
            };
            self.register(stmt.name(), kind, index);
        }
        self.lets = vec![None; counts.get(&Kind::Let).copied().unwrap_or(0)];
    }

    fn register(&mut self, name: &Ident, kind: Kind, index: Option<usize>) {
        let text = key(name);
        if let Some((_, what)) = RESERVED.iter().find(|(word, _)| *word == text) {
            // Still declared below, so that its uses raise no second error.
            self.error(
                name.span(),
                format!("`{text}` is reserved for {what}: pick another name"),
            );
        }
        match self.names.get(&text) {
            Some(previous) if kind == Kind::Observe && previous.kind != Kind::Observe => {
                let message = format!(
                    "cannot observe `{text}`: it is {}, and `observe` declares a new output{}",
                    previous.kind.describe(),
                    match previous.kind {
                        Kind::Param | Kind::Latent =>
                            format!(" (the prior of `{text}` belongs in its declaration)"),
                        _ => String::new(),
                    }
                );
                self.error(name.span(), message);
            }
            Some(previous) => {
                let message = format!(
                    "duplicate name `{text}`: it is already {}; every dimension, latent, parameter, `let` and output needs its own name",
                    previous.kind.describe()
                );
                self.error(name.span(), message);
            }
            None => {
                self.names.insert(text, Named { kind, index });
            }
        }
    }

    /// Returns whether `name` was registered by the statement of `kind` at `index`, and
    /// not by an earlier declaration of the same name.
    fn declares(&self, name: &Ident, kind: Kind, index: usize) -> bool {
        matches!(self.lookup(name), Some(named) if named.kind == kind && named.index == Some(index))
    }

    fn lookup(&self, name: &Ident) -> Option<Named> {
        self.names.get(&key(name)).copied()
    }

    // ---- declarations ------------------------------------------------------------

    /// Latents and parameters, in the order written. A parameter with `_` in its shape
    /// is declared at its first use instead, once `_` is known.
    fn declarations(&mut self) {
        for stmt in &self.decl.stmts {
            match stmt {
                Stmt::Latent {
                    docs,
                    name,
                    shape,
                    prior,
                } => self.latent(docs, name, shape.as_ref(), prior.as_ref()),
                Stmt::Param {
                    docs,
                    name,
                    shape,
                    prior,
                } => self.param(docs, name, shape.as_ref(), prior.as_ref()),
                _ => {}
            }
        }
    }

    fn latent(
        &mut self,
        docs: &'a [Attribute],
        name: &'a Ident,
        shape: Option<&'a Shape>,
        prior: Option<&'a Prior>,
    ) {
        let size = shape.and_then(|shape| self.vector_size(shape, "a latent"));
        if let Some(Prior {
            kind: PriorKind::HalfNormal { .. },
            name: dist,
        }) = prior
        {
            self.error(
                dist.span(),
                format!("latent `{name}` takes a `Normal` or `Flat` prior: `HalfNormal` is for scales and scatters"),
            );
        }
        let local = self.fresh();
        if let (Some(size), Some(prior)) = (&size, prior) {
            self.ops.push(Op::Latent {
                out: local,
                name: key(name),
                size: size.clone(),
                prior: prior.kind.clone(),
            });
        }
        self.latents.push(LatentInfo {
            name,
            docs,
            size,
            prior,
            local,
        });
    }

    fn param(
        &mut self,
        docs: &'a [Attribute],
        name: &'a Ident,
        shape: Option<&'a Shape>,
        prior: Option<&'a Prior>,
    ) {
        let entries = shape.and_then(|shape| self.param_shape(name, shape));
        self.params.push(ParamInfo {
            name,
            docs,
            shape: entries,
            prior,
            emitted: false,
        });
        self.emit_param(self.params.len() - 1);
    }

    /// Reads the single size of a latent, `let` or output shape.
    fn vector_size(&mut self, shape: &Shape, what: &str) -> Option<Size> {
        let [item] = shape.items.as_slice() else {
            self.error(
                shape.span,
                format!("{what} is a vector: give it one size, like `[K]`, not `{shape}`"),
            );
            return None;
        };
        match self.size_entry(item) {
            Entry::Known(size) => Some(size),
            Entry::Hole(span) => {
                self.error(
                    span,
                    format!("the size of {what} cannot be `_`: write the size"),
                );
                None
            }
            Entry::Unknown => None,
        }
    }

    fn param_shape(&mut self, name: &Ident, shape: &Shape) -> Option<Vec<Entry>> {
        if shape.items.len() > 2 {
            self.error(
                shape.span,
                format!("parameter `{name}` has {} dimensions: a parameter is a scalar `[]`, a vector `[D]` or a matrix `[D1, D2]`", shape.items.len()),
            );
            return None;
        }
        let entries: Vec<Entry> = shape
            .items
            .iter()
            .map(|item| self.size_entry(item))
            .collect();
        if let [Entry::Hole(span), _] = entries.as_slice() {
            self.error(
                *span,
                format!("the rows of `{name}` cannot be `_`: only the input size of a matrix (its second dimension) is read off its use"),
            );
            return None;
        }
        Some(entries)
    }

    fn size_entry(&mut self, item: &SizeTok) -> Entry {
        match item {
            SizeTok::Lit(0, span) => {
                self.error(*span, "a size must be at least 1");
                Entry::Unknown
            }
            SizeTok::Lit(n, _) => Entry::Known(Size::lit(*n)),
            SizeTok::Infer(span) => Entry::Hole(*span),
            SizeTok::Name(ident) => match self.dimension(ident) {
                Some(size) => Entry::Known(size),
                None => Entry::Unknown,
            },
        }
    }

    /// Resolves the header dimension `ident` to a size.
    fn dimension(&mut self, ident: &Ident) -> Option<Size> {
        match self.lookup(ident) {
            Some(Named {
                kind: Kind::Dim,
                index: Some(index),
            }) => Some(Size::dim(index)),
            Some(Named { index: None, .. }) => None,
            Some(Named { kind, .. }) => {
                self.error(
                    ident.span(),
                    format!("`{ident}` is {}, not a dimension: sizes are integers or dimension names from the model header", kind.describe()),
                );
                None
            }
            None => {
                self.error(
                    ident.span(),
                    format!("unknown dimension `{ident}`: add it to the model header, as in `{}(..., size: {ident})`", self.decl.name),
                );
                None
            }
        }
    }

    /// Declares parameter `param` to the builder if it is not yet and its shape is known.
    fn emit_param(&mut self, param: usize) {
        let info = &self.params[param];
        let (Some(entries), Some(prior)) = (&info.shape, info.prior) else {
            return;
        };
        if info.emitted {
            return;
        }
        let shape: Option<Vec<Size>> = entries
            .iter()
            .map(|entry| match entry {
                Entry::Known(size) => Some(size.clone()),
                _ => None,
            })
            .collect();
        let Some(shape) = shape else { return };
        let op = Op::Param {
            param,
            name: key(info.name),
            shape,
            prior: prior.kind.clone(),
        };
        self.params[param].emitted = true;
        self.ops.push(op);
    }

    // ---- lets and outputs --------------------------------------------------------

    fn definitions(&mut self) {
        let mut let_index = 0;
        for stmt in &self.decl.stmts {
            match stmt {
                Stmt::Let { name, shape, value } => {
                    let checked = self.value(value);
                    if let Some(shape) = shape {
                        self.check_declared_size(name, shape, &checked, value, "a `let` binding");
                    }
                    if self.declares(name, Kind::Let, let_index) {
                        self.lets[let_index] = Some(checked);
                    }
                    let_index += 1;
                }
                Stmt::Observe {
                    name,
                    shape,
                    mean,
                    noise,
                } => self.observe(name, shape.as_ref(), mean, noise.as_ref()),
                _ => {}
            }
        }
    }

    fn check_declared_size(
        &mut self,
        name: &Ident,
        shape: &Shape,
        value: &Value,
        expr: &Expr,
        what: &str,
    ) {
        let Some(declared) = self.vector_size(shape, what) else {
            return;
        };
        if let Some(size) = &value.size
            && *size != declared
        {
            let message = format!(
                "`{expr}` has size {}, but `{name}` is declared [{}]",
                self.render(size),
                self.render(&declared)
            );
            self.error_at(&expr.tokens, message);
        }
    }

    fn observe(&mut self, name: &Ident, shape: Option<&Shape>, mean: &Expr, noise: Option<&Noise>) {
        let value = self.value(mean);
        if let Some(shape) = shape {
            self.check_declared_size(name, shape, &value, mean, "an observed output");
        }
        self.used_latents.extend(value.latents.iter().copied());

        let scatter = match noise {
            Some(Noise::Hypot(scatter)) => self.scatter(name, scatter, &value),
            _ => None,
        };
        let scatter_ok = !matches!(noise, Some(Noise::Hypot(_))) || scatter.is_some();
        if let (Some(mean), true, Some(_)) = (value.local, scatter_ok, noise) {
            self.ops.push(Op::Observe {
                name: key(name),
                mean,
                scatter,
            });
        }
    }

    /// Resolves the parameter behind `hypot(err, scatter)` of output `output`.
    fn scatter(&mut self, output: &Ident, scatter: &Ident, mean: &Value) -> Option<usize> {
        let param = match self.lookup(scatter) {
            Some(Named {
                kind: Kind::Param,
                index: Some(param),
            }) => param,
            Some(Named { index: None, .. }) => return None,
            Some(Named { kind, .. }) => {
                self.error(
                    scatter.span(),
                    format!(
                        "the intrinsic scatter `{scatter}` must be a parameter, but it is {}",
                        kind.describe()
                    ),
                );
                return None;
            }
            None => {
                self.error(
                    scatter.span(),
                    format!("unknown name `{scatter}`: declare the intrinsic scatter as a parameter, as in `param {scatter}: [] ~ HalfNormal(1.0);`"),
                );
                return None;
            }
        };

        if let Some(Prior {
            kind: PriorKind::Normal { .. },
            name: dist,
        }) = self.params[param].prior
        {
            self.error(
                dist.span(),
                format!("`{scatter}` is the intrinsic scatter of `{output}`, a scale: give it a `HalfNormal` or `Flat` prior"),
            );
        }
        let shape = self.params[param].shape.clone()?;
        match shape.as_slice() {
            [] => {}
            [entry] => match (entry, &mean.size) {
                (Entry::Known(size), Some(output_size)) if size != output_size => {
                    let message = format!(
                        "the intrinsic scatter `{scatter}` has size {}, but `{output}` has size {}: give it shape [] or [{}]",
                        self.render(size),
                        self.render(output_size),
                        self.render(output_size)
                    );
                    self.error(scatter.span(), message);
                }
                (Entry::Hole(_), Some(output_size)) => {
                    self.params[param].shape = Some(vec![Entry::Known(output_size.clone())]);
                }
                (Entry::Hole(_), None) => self.params[param].shape = Some(vec![Entry::Unknown]),
                _ => {}
            },
            _ => {
                let message = format!(
                    "the intrinsic scatter `{scatter}` has shape {}: give it shape [] (one for the output) or a vector of the output's size",
                    self.render_shape(param)
                );
                self.error(scatter.span(), message);
                return None;
            }
        }
        self.emit_param(param);
        Some(param)
    }

    // ---- expressions -------------------------------------------------------------

    fn fresh(&mut self) -> usize {
        self.next_local += 1;
        self.next_local - 1
    }

    /// Returns the local for the expression rendered as `text`, emitting `op` unless an
    /// identical expression was built already.
    fn emit(&mut self, text: String, op: impl FnOnce(usize) -> Op) -> usize {
        if let Some(&local) = self.memo.get(&text) {
            return local;
        }
        let local = self.fresh();
        self.ops.push(op(local));
        self.memo.insert(text, local);
        local
    }

    fn value(&mut self, expr: &Expr) -> Value {
        match &expr.kind {
            ExprKind::Invalid => Value {
                latents: self.mentioned_latents(&expr.tokens),
                ..Value::default()
            },
            ExprKind::Name(ident) => self.name_value(ident),
            ExprKind::Mul(left, right) => self.product(expr, left, right),
            ExprKind::Add(left, right) => self.sum(expr, left, right),
            ExprKind::Slice { input, start, end } => self.slice(expr, input, start, end),
            ExprKind::Concat(items) => {
                let values: Vec<Value> = items.iter().map(|item| self.value(item)).collect();
                let size = values.iter().try_fold(Size::lit(0), |total, v| {
                    v.size.as_ref().map(|s| total.plus(s))
                });
                let inputs: Option<Vec<usize>> = values.iter().map(|v| v.local).collect();
                let local = inputs
                    .map(|inputs| self.emit(expr.to_string(), |out| Op::Concat { out, inputs }));
                Value {
                    size,
                    latents: values.into_iter().flat_map(|v| v.latents).collect(),
                    local,
                }
            }
            ExprKind::Poly { input, degree } => {
                let value = self.value(input);
                let degree = *degree;
                let local = value.local.map(|input| {
                    self.emit(expr.to_string(), |out| Op::Poly { out, input, degree })
                });
                Value {
                    size: value.size.map(|s| s.poly(degree)),
                    latents: value.latents,
                    local,
                }
            }
        }
    }

    /// Collects the latents named in an expression already reported as an error,
    /// directly or through a `let`, so that they are not also reported as unused.
    fn mentioned_latents(&self, tokens: &TokenStream) -> BTreeSet<usize> {
        let mut found = BTreeSet::new();
        for tree in tokens.clone() {
            match tree {
                TokenTree::Ident(ident) => match self.lookup(&ident) {
                    Some(Named {
                        kind: Kind::Latent,
                        index: Some(index),
                    }) => {
                        found.insert(index);
                    }
                    Some(Named {
                        kind: Kind::Let,
                        index: Some(index),
                    }) => {
                        if let Some(value) = &self.lets[index] {
                            found.extend(value.latents.iter().copied());
                        }
                    }
                    _ => {}
                },
                TokenTree::Group(group) => found.extend(self.mentioned_latents(&group.stream())),
                _ => {}
            }
        }
        found
    }

    fn name_value(&mut self, ident: &Ident) -> Value {
        let text = key(ident);
        match self.lookup(ident) {
            None => {
                self.error(
                    ident.span(),
                    format!("unknown name `{text}`: declare it with `latent`, `param` or `let`"),
                );
                self.unresolved = true;
                Value::default()
            }
            Some(Named { index: None, .. }) => Value::default(),
            Some(Named {
                kind: Kind::Latent,
                index: Some(index),
            }) => {
                let latent = &self.latents[index];
                Value {
                    size: latent.size.clone(),
                    latents: BTreeSet::from([index]),
                    local: latent.prior.and(latent.size.as_ref()).map(|_| latent.local),
                }
            }
            Some(Named {
                kind: Kind::Let,
                index: Some(index),
            }) => match &self.lets[index] {
                Some(value) => value.clone(),
                None => {
                    self.error(
                        ident.span(),
                        format!("`{text}` is used before its `let`: move the `let` above this use"),
                    );
                    Value::default()
                }
            },
            Some(Named {
                kind: Kind::Param, ..
            }) => {
                self.error(
                    ident.span(),
                    format!("parameter `{text}` is not a per-object value: apply a matrix as `{text} * x` or add a vector as a bias `x + {text}`"),
                );
                Value::default()
            }
            Some(Named {
                kind: Kind::Dim, ..
            }) => {
                self.error(
                    ident.span(),
                    format!("`{text}` is a dimension (a size), not a value"),
                );
                Value::default()
            }
            Some(Named {
                kind: Kind::Observe,
                ..
            }) => {
                self.error(
                    ident.span(),
                    format!("`{text}` is an observed output, not a value: outputs cannot feed expressions (bind its mean with `let` and use that name)"),
                );
                Value::default()
            }
        }
    }

    /// Returns the parameter that `expr` names, if it is a bare parameter name.
    fn param_named(&self, expr: &Expr) -> Option<usize> {
        match &expr.kind {
            ExprKind::Name(ident) => match self.lookup(ident) {
                Some(Named {
                    kind: Kind::Param,
                    index,
                }) => index,
                _ => None,
            },
            _ => None,
        }
    }

    fn is_param_name(&self, expr: &Expr) -> bool {
        matches!(&expr.kind, ExprKind::Name(ident) if matches!(self.lookup(ident), Some(Named { kind: Kind::Param, .. })))
    }

    /// Returns the matrix parameter on the left of `*`, or reports why there is none.
    fn matrix_operand(&mut self, whole: &Expr, left: &Expr, right: &Expr) -> Option<usize> {
        if let Some(param) = self.param_named(left) {
            return Some(param);
        }
        if self.is_param_name(left) {
            return None;
        }
        match &left.kind {
            ExprKind::Name(ident) => match self.lookup(ident) {
                Some(Named {
                    kind: kind @ (Kind::Latent | Kind::Let),
                    ..
                }) => {
                    let message = format!(
                        "unsupported operation `{whole}`: `*` applies a matrix parameter to a vector, but `{ident}` is {}",
                        kind.describe()
                    );
                    self.error(ident.span(), message);
                }
                _ => {
                    self.name_value(ident);
                }
            },
            ExprKind::Mul(a, b) => {
                self.error_at(
                    &left.tokens,
                    format!(
                        "products of matrices are not supported: write `{a} * ({b} * {right})`"
                    ),
                );
            }
            ExprKind::Invalid => {}
            _ => {
                self.error_at(
                    &left.tokens,
                    format!("the left side of `*` must be a matrix parameter, as in `A * {right}`"),
                );
            }
        }
        None
    }

    fn product(&mut self, whole: &Expr, left: &Expr, right: &Expr) -> Value {
        if !self.is_param_name(left) && self.is_param_name(right) {
            self.error_at(
                &whole.tokens,
                format!("`*` takes the matrix on its left: write `{right} * {left}`"),
            );
            let flipped = self.value(left);
            return Value {
                latents: flipped.latents,
                ..Value::default()
            };
        }
        let input = self.value(right);
        let Some(matrix) = self.matrix_operand(whole, left, right) else {
            return Value {
                latents: input.latents,
                ..Value::default()
            };
        };
        let size = self.apply_matrix(matrix, left, &input, right);
        let local = match (size.is_some(), input.local) {
            (true, Some(input)) => {
                Some(self.emit(whole.to_string(), |out| Op::Linear { out, matrix, input }))
            }
            _ => None,
        };
        Value {
            size,
            latents: input.latents,
            local,
        }
    }

    /// Checks `matrix * input`, reads a `_` off the input, and returns the output size.
    fn apply_matrix(
        &mut self,
        matrix: usize,
        left: &Expr,
        input: &Value,
        right: &Expr,
    ) -> Option<Size> {
        let name = self.params[matrix].name;
        let entries = self.params[matrix].shape.clone()?;
        let [rows, columns] = entries.as_slice() else {
            let message = format!(
                "`{name}` has shape {}, but `*` needs a matrix parameter of shape [out, in]",
                self.render_shape(matrix)
            );
            self.error_at(&left.tokens, message);
            return None;
        };
        match (columns, &input.size) {
            (Entry::Known(columns), Some(size)) if columns != size => {
                let message = format!(
                    "`{name}` has shape {}, so it takes an input of size {}, but `{right}` has size {}",
                    self.render_shape(matrix),
                    self.render(columns),
                    self.render(size)
                );
                self.error_at(&right.tokens, message);
                return None;
            }
            (Entry::Hole(_), size) => {
                let filled = size.clone().map_or(Entry::Unknown, Entry::Known);
                self.params[matrix].shape = Some(vec![rows.clone(), filled]);
            }
            _ => {}
        }
        self.emit_param(matrix);
        match rows {
            Entry::Known(rows) => Some(rows.clone()),
            _ => None,
        }
    }

    /// Checks `input + bias` and reads a `_` off the input.
    fn apply_bias(
        &mut self,
        bias: usize,
        bias_expr: &Expr,
        input: &Value,
        input_expr: &Expr,
    ) -> bool {
        let name = self.params[bias].name;
        let Some(entries) = self.params[bias].shape.clone() else {
            return false;
        };
        let [entry] = entries.as_slice() else {
            let message = format!(
                "a bias is a vector parameter, but `{name}` has shape {}",
                self.render_shape(bias)
            );
            self.error_at(&bias_expr.tokens, message);
            return false;
        };
        match (entry, &input.size) {
            (Entry::Known(size), Some(input_size)) if size != input_size => {
                let message = format!(
                    "the bias `{name}` has size {}, but `{input_expr}` has size {}",
                    self.render(size),
                    self.render(input_size)
                );
                self.error_at(&bias_expr.tokens, message);
                return false;
            }
            (Entry::Hole(_), size) => {
                self.params[bias].shape =
                    Some(vec![size.clone().map_or(Entry::Unknown, Entry::Known)]);
            }
            _ => {}
        }
        self.emit_param(bias);
        true
    }

    fn sum(&mut self, whole: &Expr, left: &Expr, right: &Expr) -> Value {
        let (input_expr, bias_expr) = if self.is_param_name(right) {
            (left, right)
        } else if self.is_param_name(left) {
            (right, left)
        } else {
            let left_value = self.value(left);
            let right_value = self.value(right);
            if left_value.local.is_some() && right_value.local.is_some() {
                self.error_at(
                    &whole.tokens,
                    format!("unsupported operation `{whole}`: `+` adds a bias parameter to a vector, as in `A * z + b`, and neither side is a parameter"),
                );
            }
            return Value {
                latents: left_value
                    .latents
                    .into_iter()
                    .chain(right_value.latents)
                    .collect(),
                ..Value::default()
            };
        };
        let Some(bias) = self.param_named(bias_expr) else {
            return self.value(input_expr);
        };

        // `A * x + b` is one affine call, unless `A * x` was already built on its own.
        if let ExprKind::Mul(matrix_expr, x) = &input_expr.kind
            && let Some(matrix) = self.param_named(matrix_expr)
            && !self.memo.contains_key(&input_expr.to_string())
        {
            return self.affine(whole, matrix, matrix_expr, x, bias, bias_expr, input_expr);
        }

        let input = self.value(input_expr);
        let biased = self.apply_bias(bias, bias_expr, &input, input_expr);
        let local = match (biased, input.local) {
            (true, Some(input)) => {
                Some(self.emit(whole.to_string(), |out| Op::AddBias { out, input, bias }))
            }
            _ => None,
        };
        Value {
            size: input.size,
            latents: input.latents,
            local,
        }
    }

    /// Checks `matrix * x + bias` and emits it as one builder call.
    #[allow(clippy::too_many_arguments)]
    fn affine(
        &mut self,
        whole: &Expr,
        matrix: usize,
        matrix_expr: &Expr,
        x: &Expr,
        bias: usize,
        bias_expr: &Expr,
        linear_expr: &Expr,
    ) -> Value {
        let x_value = self.value(x);
        let size = self.apply_matrix(matrix, matrix_expr, &x_value, x);
        let linear = Value {
            size: size.clone(),
            latents: x_value.latents.clone(),
            local: None,
        };
        let biased = size.is_some() && self.apply_bias(bias, bias_expr, &linear, linear_expr);
        let local = match (biased, x_value.local) {
            (true, Some(input)) => Some(self.emit(whole.to_string(), |out| Op::Affine {
                out,
                matrix,
                input,
                bias,
            })),
            _ => None,
        };
        Value {
            size,
            latents: x_value.latents,
            local,
        }
    }

    fn bound(&mut self, bound: &Bound) -> Option<Size> {
        match bound {
            Bound::Lit(n, _) => Some(Size::lit(*n)),
            Bound::Name(ident) => self.dimension(ident),
        }
    }

    fn slice(&mut self, whole: &Expr, input_expr: &Expr, start: &Bound, end: &Bound) -> Value {
        let input = self.value(input_expr);
        let (Some(start_size), Some(end_size)) = (self.bound(start), self.bound(end)) else {
            return Value {
                latents: input.latents,
                ..Value::default()
            };
        };
        let width = end_size.minus(&start_size);
        if width.constant_value().is_some_and(|w| w <= 0) {
            self.error_at(
                &whole.tokens,
                format!("the slice `{whole}` is empty: its end must be greater than its start"),
            );
            return Value {
                latents: input.latents,
                ..Value::default()
            };
        }
        if let Some(size) = &input.size
            && size
                .minus(&end_size)
                .constant_value()
                .is_some_and(|room| room < 0)
        {
            let message = format!(
                "slice end {end} is beyond the end of `{input_expr}`, which has size {}",
                self.render(size)
            );
            self.error(end.span(), message);
            return Value {
                latents: input.latents,
                ..Value::default()
            };
        }
        let local = input.local.map(|input| {
            self.emit(whole.to_string(), |out| Op::Slice {
                out,
                input,
                start: start_size,
                end: end_size,
            })
        });
        Value {
            size: input.size.as_ref().map(|_| width),
            latents: input.latents,
            local,
        }
    }

    fn render_shape(&self, param: usize) -> String {
        let Some(entries) = &self.params[param].shape else {
            return "[?]".to_string();
        };
        let items: Vec<String> = entries
            .iter()
            .map(|entry| match entry {
                Entry::Known(size) => self.render(size),
                Entry::Hole(_) => "_".to_string(),
                Entry::Unknown => "?".to_string(),
            })
            .collect();
        format!("[{}]", items.join(", "))
    }

    // ---- the model as a whole ----------------------------------------------------

    fn final_checks(&mut self) {
        // An unknown name may be a misspelled latent, which is then not unused.
        let unused: Vec<&Ident> = self
            .latents
            .iter()
            .enumerate()
            .filter(|(index, latent)| {
                !self.unresolved
                    && !self.used_latents.contains(index)
                    && self.declares(latent.name, Kind::Latent, *index)
            })
            .map(|(_, latent)| latent.name)
            .collect();
        for name in unused {
            self.error(
                name.span(),
                format!("latent `{name}` feeds no observed output, so the data say nothing about it: use it in an `observe` or remove it"),
            );
        }

        let holes: Vec<(Span, &Ident)> = self
            .params
            .iter()
            .enumerate()
            .filter(|(index, param)| self.declares(param.name, Kind::Param, *index))
            .filter_map(|(_, param)| {
                param.shape.as_ref()?.iter().find_map(|entry| match entry {
                    Entry::Hole(span) => Some((*span, param.name)),
                    _ => None,
                })
            })
            .collect();
        for (span, name) in holes {
            self.error(
                span,
                format!("cannot infer `_` in the shape of `{name}`: it is never used as `{name} * x`, a bias or a scatter, where its size would be read off; write the size"),
            );
        }

        let has = |kind: Kind| self.decl.stmts.iter().any(|s| s.kind() == kind);
        if !has(Kind::Latent) {
            self.error(
                self.decl.name.span(),
                format!("model `{}` has no latent: declare one, as in `latent z: [K] ~ Normal(0.0, 1.0);`", self.decl.name),
            );
        }
        if !has(Kind::Observe) {
            self.error(
                self.decl.name.span(),
                format!("model `{}` has no observed output: declare one, as in `observe flux: [P] ~ Normal(B * z, err);`", self.decl.name),
            );
        }
    }

    fn into_plan(self) -> Plan<'a> {
        let latents = self
            .latents
            .iter()
            .map(|latent| LatentPlan {
                name: latent.name,
                docs: latent.docs,
                size: latent
                    .size
                    .as_ref()
                    .map(|s| self.render(s))
                    .unwrap_or_default(),
                prior: latent.prior.map(|p| p.kind.to_string()).unwrap_or_default(),
            })
            .collect();
        let params = (0..self.params.len())
            .map(|index| {
                let param = &self.params[index];
                ParamPlan {
                    name: param.name,
                    docs: param.docs,
                    rank: param.shape.as_ref().map_or(0, Vec::len),
                    shape: self.render_shape(index),
                    prior: param.prior.map(|p| p.kind.to_string()).unwrap_or_default(),
                }
            })
            .collect();
        Plan {
            decl: self.decl,
            latents,
            params,
            ops: self.ops,
        }
    }
}
