//! The syntax tree of a model declaration, as parsed and before any name is resolved.

use std::fmt;

use proc_macro2::{Span, TokenStream};
use syn::{Attribute, Ident, Visibility};

/// `#[attrs] vis model Name(arg: SYMBOL, ...) { statements }`.
pub struct ModelDecl {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub name: Ident,
    pub dims: Vec<DimDecl>,
    pub stmts: Vec<Stmt>,
}

/// `pixels: P` in the header: constructor argument `pixels`, size symbol `P`.
pub struct DimDecl {
    pub arg: Ident,
    pub symbol: Ident,
}

/// One entry of a shape such as `[P, _]`.
pub enum SizeTok {
    Lit(usize, Span),
    Name(Ident),
    Infer(Span),
}

/// A bracketed shape. `span` covers the brackets.
pub struct Shape {
    pub items: Vec<SizeTok>,
    pub span: Span,
}

/// A number literal in a prior, with an optional minus sign.
#[derive(Clone)]
pub struct Number {
    pub value: f64,
    pub tokens: TokenStream,
}

#[derive(Clone)]
pub enum PriorKind {
    Flat,
    Normal { mean: Number, scale: Number },
    HalfNormal { scale: Number },
}

/// A prior and the identifier that named its distribution.
pub struct Prior {
    pub kind: PriorKind,
    pub name: Ident,
}

/// The noise of an observed output: the reported error alone or combined with an
/// intrinsic scatter parameter.
pub enum Noise {
    Err,
    Hypot(Ident),
}

/// The kind of item a name declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Dim,
    Latent,
    Param,
    Let,
    Observe,
}

impl Kind {
    /// Returns the kind with its article, for messages: "a latent".
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Dim => "a dimension",
            Kind::Latent => "a latent",
            Kind::Param => "a parameter",
            Kind::Let => "a `let` binding",
            Kind::Observe => "an observed output",
        }
    }
}

/// A statement. Parts that failed to parse are `None` or [`ExprKind::Invalid`]. Their
/// errors are already recorded, and validation skips the checks that need them.
pub enum Stmt {
    Latent {
        docs: Vec<Attribute>,
        name: Ident,
        shape: Option<Shape>,
        prior: Option<Prior>,
    },
    Param {
        docs: Vec<Attribute>,
        name: Ident,
        shape: Option<Shape>,
        prior: Option<Prior>,
    },
    Let {
        name: Ident,
        shape: Option<Shape>,
        value: Expr,
    },
    Observe {
        name: Ident,
        shape: Option<Shape>,
        mean: Expr,
        noise: Option<Noise>,
    },
    /// A statement whose syntax failed after its keyword and name were read: the name
    /// stays declared so that its uses raise no second error.
    Broken { kind: Kind, name: Ident },
}

impl Stmt {
    pub fn name(&self) -> &Ident {
        match self {
            Stmt::Latent { name, .. }
            | Stmt::Param { name, .. }
            | Stmt::Let { name, .. }
            | Stmt::Observe { name, .. }
            | Stmt::Broken { name, .. } => name,
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Stmt::Latent { .. } => Kind::Latent,
            Stmt::Param { .. } => Kind::Param,
            Stmt::Let { .. } => Kind::Let,
            Stmt::Observe { .. } => Kind::Observe,
            Stmt::Broken { kind, .. } => *kind,
        }
    }
}

/// A slice bound: a literal or a header dimension.
pub enum Bound {
    Lit(usize, Span),
    Name(Ident),
}

impl Bound {
    pub fn span(&self) -> Span {
        match self {
            Bound::Lit(_, span) => *span,
            Bound::Name(ident) => ident.span(),
        }
    }
}

/// An expression and the tokens it came from (for error spans).
pub struct Expr {
    pub kind: ExprKind,
    pub tokens: TokenStream,
}

pub enum ExprKind {
    /// A latent or a `let` binding (or, wrongly, some other name).
    Name(Ident),
    /// `left * right`: a matrix parameter applied to a vector.
    Mul(Box<Expr>, Box<Expr>),
    /// `left + right`: a bias parameter added to a vector.
    Add(Box<Expr>, Box<Expr>),
    /// `input[start..end]`.
    Slice {
        input: Box<Expr>,
        start: Bound,
        end: Bound,
    },
    /// `concat(a, b, ...)`.
    Concat(Vec<Expr>),
    /// `poly(input, degree)`.
    Poly { input: Box<Expr>, degree: u32 },
    /// An expression already reported as an error.
    Invalid,
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bound::Lit(n, _) => write!(f, "{n}"),
            Bound::Name(ident) => write!(f, "{ident}"),
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ExprKind::Name(ident) => write!(f, "{ident}"),
            ExprKind::Mul(left, right) => match right.kind {
                ExprKind::Add(..) => write!(f, "{left} * ({right})"),
                _ => write!(f, "{left} * {right}"),
            },
            ExprKind::Add(left, right) => write!(f, "{left} + {right}"),
            ExprKind::Slice { input, start, end } => match input.kind {
                ExprKind::Mul(..) | ExprKind::Add(..) => write!(f, "({input})[{start}..{end}]"),
                _ => write!(f, "{input}[{start}..{end}]"),
            },
            ExprKind::Concat(items) => {
                write!(f, "concat(")?;
                for (position, item) in items.iter().enumerate() {
                    if position > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{item}")?;
                }
                write!(f, ")")
            }
            ExprKind::Poly { input, degree } => write!(f, "poly({input}, {degree})"),
            ExprKind::Invalid => write!(f, "<invalid>"),
        }
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.value)
    }
}

impl fmt::Display for PriorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PriorKind::Flat => write!(f, "Flat"),
            PriorKind::Normal { mean, scale } => write!(f, "Normal({mean}, {scale})"),
            PriorKind::HalfNormal { scale } => write!(f, "HalfNormal({scale})"),
        }
    }
}

impl fmt::Display for Noise {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Noise::Err => write!(f, "err"),
            Noise::Hypot(scatter) => write!(f, "hypot(err, {scatter})"),
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (position, item) in self.items.iter().enumerate() {
            if position > 0 {
                write!(f, ", ")?;
            }
            match item {
                SizeTok::Lit(n, _) => write!(f, "{n}")?,
                SizeTok::Name(ident) => write!(f, "{ident}")?,
                SizeTok::Infer(_) => write!(f, "_")?,
            }
        }
        write!(f, "]")
    }
}
