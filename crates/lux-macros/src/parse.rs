//! Stage 1: tokens to the syntax tree of [`crate::ast`].
//!
//! The header of a model must parse, or nothing else can be checked. The body is split
//! at its top-level `;` and each statement is parsed on its own, so one malformed
//! statement does not hide mistakes in the others.

use proc_macro2::{TokenStream, TokenTree};
use quote::ToTokens;
use syn::parse::{ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{
    Attribute, BinOp, Ident, Lit, RangeLimits, Token, UnOp, Visibility, bracketed, parenthesized,
};

use crate::ast::{
    Bound, DimDecl, Expr, ExprKind, Kind, ModelDecl, Noise, Number, Prior, PriorKind, Shape,
    SizeTok, Stmt,
};

/// The operations expressions may contain, for messages about everything else.
const OPERATIONS: &str = "expressions are built from `A * x`, `x + b`, `x[a..b]`, `concat(x, y, ...)` and `poly(x, degree)`";

/// Parses every model in the macro input, and collects the errors found in their
/// statements.
pub fn parse(input: TokenStream) -> syn::Result<(Vec<ModelDecl>, Vec<syn::Error>)> {
    let headers = parse_headers.parse2(input)?;
    let mut errors = Vec::new();
    let models = headers
        .into_iter()
        .map(|(header, body)| ModelDecl {
            stmts: parse_body(body, &mut errors),
            ..header
        })
        .collect();
    Ok((models, errors))
}

fn parse_headers(input: ParseStream) -> syn::Result<Vec<(ModelDecl, TokenStream)>> {
    let mut models = Vec::new();
    while !input.is_empty() {
        models.push(parse_header(input)?);
    }
    if models.is_empty() {
        return Err(
            input.error("expected a model, as in `pub model Lux(latents: K, pixels: P) { ... }`")
        );
    }
    Ok(models)
}

fn parse_header(input: ParseStream) -> syn::Result<(ModelDecl, TokenStream)> {
    let attrs = input.call(Attribute::parse_outer)?;
    let vis: Visibility = input.parse()?;
    let keyword: Ident = input.parse().map_err(|e| {
        syn::Error::new(
            e.span(),
            "expected `model`, as in `pub model Lux(latents: K) { ... }`",
        )
    })?;
    if keyword != "model" {
        return Err(syn::Error::new(
            keyword.span(),
            format!(
                "expected `model`, found `{keyword}`: a declaration reads `pub model Lux(latents: K) {{ ... }}`"
            ),
        ));
    }
    let name: Ident = input.parse()?;
    if input.peek(Token![<]) {
        return Err(
            input.error("a model takes no generic parameters: its sizes are constructor arguments")
        );
    }

    let header;
    parenthesized!(header in input);
    let dims = Punctuated::<DimDecl, Token![,]>::parse_terminated_with(&header, parse_dim)?;

    let body;
    syn::braced!(body in input);
    let body: TokenStream = body.parse()?;

    let decl = ModelDecl {
        attrs,
        vis,
        name,
        dims: dims.into_iter().collect(),
        stmts: Vec::new(),
    };
    Ok((decl, body))
}

fn parse_dim(input: ParseStream) -> syn::Result<DimDecl> {
    let arg: Ident = input.parse()?;
    if !input.peek(Token![:]) {
        return Err(syn::Error::new(
            arg.span(),
            format!(
                "a dimension is declared as `argument: SYMBOL`, as in `pixels: P`; `{arg}` has no symbol"
            ),
        ));
    }
    input.parse::<Token![:]>()?;
    let symbol: Ident = input.parse()?;
    Ok(DimDecl { arg, symbol })
}

fn parse_body(body: TokenStream, errors: &mut Vec<syn::Error>) -> Vec<Stmt> {
    let mut stmts = Vec::new();
    for chunk in split_statements(body, errors) {
        let mut soft = Vec::new();
        let parsed = (|input: ParseStream| parse_stmt(input, &mut soft)).parse2(chunk.clone());
        errors.append(&mut soft);
        match parsed {
            Ok(stmt) => stmts.push(stmt),
            Err(error) => {
                errors.push(error);
                if let Some((kind, name)) = recover_name(chunk) {
                    stmts.push(Stmt::Broken { kind, name });
                }
            }
        }
    }
    stmts
}

/// Splits a body into statements at its top-level `;`, and reports a missing last `;`.
fn split_statements(body: TokenStream, errors: &mut Vec<syn::Error>) -> Vec<TokenStream> {
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    for tree in body {
        match &tree {
            TokenTree::Punct(p) if p.as_char() == ';' => {
                if !current.is_empty() {
                    chunks.push(current.drain(..).collect());
                }
            }
            _ => current.push(tree),
        }
    }
    if let Some(last) = current.last() {
        let span = match last {
            TokenTree::Group(group) => group.span_close(),
            other => other.span(),
        };
        errors.push(syn::Error::new(
            span,
            "expected `;` at the end of this statement",
        ));
        chunks.push(current.into_iter().collect());
    }
    chunks
}

/// Reads the kind and name of a statement whose syntax failed, if its start is readable.
fn recover_name(chunk: TokenStream) -> Option<(Kind, Ident)> {
    let mut trees = chunk.into_iter().peekable();
    while let Some(TokenTree::Punct(p)) = trees.peek() {
        if p.as_char() != '#' {
            break;
        }
        trees.next();
        trees.next();
    }
    let keyword = match trees.next()? {
        TokenTree::Ident(ident) => ident,
        _ => return None,
    };
    let kind = match keyword.to_string().as_str() {
        "latent" => Kind::Latent,
        "param" => Kind::Param,
        "let" => Kind::Let,
        "observe" => Kind::Observe,
        _ => return None,
    };
    match trees.next()? {
        TokenTree::Ident(name) => Some((kind, name)),
        _ => None,
    }
}

fn parse_stmt(input: ParseStream, errors: &mut Vec<syn::Error>) -> syn::Result<Stmt> {
    let attrs = input.call(Attribute::parse_outer)?;
    let docs = doc_attrs(attrs, errors);

    if input.peek(Token![let]) {
        input.parse::<Token![let]>()?;
        let name: Ident = input.parse()?;
        let shape = optional_shape(input, errors)?;
        input.parse::<Token![=]>()?;
        let value: syn::Expr = input.parse()?;
        return Ok(Stmt::Let {
            name,
            shape,
            value: lower_expr(&value, errors),
        });
    }

    let keyword: Ident = input.parse().map_err(|e| {
        syn::Error::new(
            e.span(),
            "expected a statement: `latent`, `param`, `let` or `observe`",
        )
    })?;
    match keyword.to_string().as_str() {
        "latent" | "param" => {
            let name: Ident = input.parse()?;
            if !input.peek(Token![:]) {
                return Err(input.error(format!(
                    "expected `:` and a shape after `{name}`, as in `{keyword} {name}: [K] ~ Normal(0.0, 1.0);`"
                )));
            }
            let shape = optional_shape(input, errors)?;
            input.parse::<Token![~]>()?;
            let dist: syn::Expr = input.parse()?;
            let prior = lower_prior(&dist, errors);
            Ok(if keyword == "latent" {
                Stmt::Latent {
                    docs,
                    name,
                    shape,
                    prior,
                }
            } else {
                Stmt::Param {
                    docs,
                    name,
                    shape,
                    prior,
                }
            })
        }
        "observe" => {
            let name: Ident = input.parse()?;
            let shape = optional_shape(input, errors)?;
            input.parse::<Token![~]>()?;
            let dist: syn::Expr = input.parse()?;
            let (mean, noise) = lower_observation(&dist, errors);
            Ok(Stmt::Observe {
                name,
                shape,
                mean,
                noise,
            })
        }
        other => Err(syn::Error::new(
            keyword.span(),
            format!(
                "unknown statement `{other}`: a statement starts with `latent`, `param`, `let` or `observe`"
            ),
        )),
    }
}

/// Keeps the doc comments of a statement and reports any other attribute.
fn doc_attrs(attrs: Vec<Attribute>, errors: &mut Vec<syn::Error>) -> Vec<Attribute> {
    let (docs, others): (Vec<_>, Vec<_>) =
        attrs.into_iter().partition(|a| a.path().is_ident("doc"));
    for attr in others {
        errors.push(syn::Error::new_spanned(
            attr,
            "only doc comments can be attached to a statement",
        ));
    }
    docs
}

/// Parses `: [a, b]` if present. A shape with an entry that is not a size is reported
/// and returned as `None`.
fn optional_shape(input: ParseStream, errors: &mut Vec<syn::Error>) -> syn::Result<Option<Shape>> {
    if !input.peek(Token![:]) {
        return Ok(None);
    }
    input.parse::<Token![:]>()?;
    if !input.peek(syn::token::Bracket) {
        return Err(input.error("expected a shape in brackets, like `[K]`, `[P, K]` or `[]`"));
    }
    let content;
    let brackets = bracketed!(content in input);
    let items = Punctuated::<syn::Expr, Token![,]>::parse_terminated(&content)?;

    let mut sizes = Vec::new();
    let mut valid = true;
    for item in &items {
        match size_tok(item) {
            Some(tok) => sizes.push(tok),
            None => {
                valid = false;
                errors.push(syn::Error::new_spanned(
                    item,
                    "a size is an integer, a dimension name from the model header, or `_`",
                ));
            }
        }
    }
    Ok(valid.then(|| Shape {
        items: sizes,
        span: brackets.span.join(),
    }))
}

fn size_tok(expr: &syn::Expr) -> Option<SizeTok> {
    match expr {
        syn::Expr::Lit(syn::ExprLit {
            lit: Lit::Int(int), ..
        }) => int.base10_parse().ok().map(|n| SizeTok::Lit(n, int.span())),
        syn::Expr::Infer(infer) => Some(SizeTok::Infer(infer.underscore_token.span)),
        _ => single_ident(expr).map(|ident| SizeTok::Name(ident.clone())),
    }
}

/// Returns the identifier of a plain one-segment path such as `z`.
fn single_ident(expr: &syn::Expr) -> Option<&Ident> {
    match expr {
        syn::Expr::Path(path) if path.qself.is_none() && path.attrs.is_empty() => {
            path.path.get_ident()
        }
        _ => None,
    }
}

/// Splits `Name(args)` into the name and its arguments, or `Name` alone into the name
/// and `None`.
fn call_parts(expr: &syn::Expr) -> Option<(&Ident, Option<Vec<&syn::Expr>>)> {
    match expr {
        syn::Expr::Call(call) => {
            single_ident(&call.func).map(|name| (name, Some(call.args.iter().collect())))
        }
        _ => single_ident(expr).map(|name| (name, None)),
    }
}

fn given(count: usize) -> String {
    match count {
        0 => "none was given".to_string(),
        1 => "1 was given".to_string(),
        n => format!("{n} were given"),
    }
}

fn lower_prior(dist: &syn::Expr, errors: &mut Vec<syn::Error>) -> Option<Prior> {
    let Some((name, args)) = call_parts(dist) else {
        errors.push(syn::Error::new_spanned(
            dist,
            "expected a prior: `Normal(mean, scale)`, `HalfNormal(scale)` or `Flat`",
        ));
        return None;
    };
    let args = args.unwrap_or_default();
    let (expected, what) = match name.to_string().as_str() {
        "Normal" => (2, "2 arguments (mean, scale)"),
        "HalfNormal" => (1, "1 argument (scale)"),
        "Flat" => (0, "no arguments"),
        other => {
            let known = ["Normal", "HalfNormal", "Flat"];
            let hint = known
                .iter()
                .find(|k| k.eq_ignore_ascii_case(other))
                .map(|k| format!(" (names are case-sensitive: `{k}`)"))
                .unwrap_or_default();
            errors.push(syn::Error::new(
                name.span(),
                format!(
                    "unsupported distribution `{other}`: a prior is `Normal(mean, scale)`, `HalfNormal(scale)` or `Flat`{hint}"
                ),
            ));
            return None;
        }
    };
    if args.len() != expected {
        errors.push(syn::Error::new_spanned(
            dist,
            format!("`{name}` takes {what}, but {}", given(args.len())),
        ));
        return None;
    }

    let numbers: Vec<Number> = args
        .iter()
        .filter_map(|arg| lower_number(arg, errors))
        .collect();
    if numbers.len() != expected {
        return None;
    }
    let kind = match numbers.as_slice() {
        [] => PriorKind::Flat,
        [scale] => PriorKind::HalfNormal {
            scale: scale.clone(),
        },
        [mean, scale] => PriorKind::Normal {
            mean: mean.clone(),
            scale: scale.clone(),
        },
        _ => unreachable!("prior arity is at most 2"),
    };
    let scale = match &kind {
        PriorKind::Flat => None,
        PriorKind::Normal { scale, .. } | PriorKind::HalfNormal { scale } => Some(scale),
    };
    if let Some(scale) = scale
        && !(scale.value.is_finite() && scale.value > 0.0)
    {
        errors.push(syn::Error::new_spanned(
            &scale.tokens,
            format!("the scale of `{name}` must be a finite number > 0, got {scale}"),
        ));
        return None;
    }
    Some(Prior {
        kind,
        name: name.clone(),
    })
}

fn lower_number(expr: &syn::Expr, errors: &mut Vec<syn::Error>) -> Option<Number> {
    let value = match expr {
        syn::Expr::Lit(syn::ExprLit {
            lit: Lit::Float(f), ..
        }) => f.base10_parse::<f64>().ok(),
        syn::Expr::Lit(syn::ExprLit {
            lit: Lit::Int(i), ..
        }) => i.base10_parse::<f64>().ok(),
        syn::Expr::Unary(syn::ExprUnary {
            op: UnOp::Neg(_),
            expr: inner,
            ..
        }) => match lower_number(inner, errors) {
            Some(number) => {
                return Some(Number {
                    value: -number.value,
                    tokens: expr.to_token_stream(),
                });
            }
            None => return None,
        },
        _ => None,
    };
    match value {
        Some(value) if value.is_finite() => Some(Number {
            value,
            tokens: expr.to_token_stream(),
        }),
        _ => {
            errors.push(syn::Error::new_spanned(
                expr,
                "a prior argument is a finite number literal, like `1.0`",
            ));
            None
        }
    }
}

/// Lowers `Normal(mean, noise)` of an `observe`.
fn lower_observation(dist: &syn::Expr, errors: &mut Vec<syn::Error>) -> (Expr, Option<Noise>) {
    let invalid = Expr {
        kind: ExprKind::Invalid,
        tokens: dist.to_token_stream(),
    };
    match call_parts(dist) {
        Some((name, Some(args))) if name == "Normal" => {
            if args.len() != 2 {
                errors.push(syn::Error::new_spanned(
                    dist,
                    format!(
                        "`Normal` of an output takes 2 arguments (mean, noise), but {}",
                        given(args.len())
                    ),
                ));
                return (invalid, None);
            }
            (lower_expr(args[0], errors), lower_noise(args[1], errors))
        }
        Some((name, _)) => {
            let message = if name == "Normal" {
                "`Normal` of an output takes 2 arguments (mean, noise), but none was given"
                    .to_string()
            } else {
                format!(
                    "unsupported distribution `{name}` for an output: outputs have Gaussian noise, `Normal(mean, err)`"
                )
            };
            errors.push(syn::Error::new(name.span(), message));
            (invalid, None)
        }
        None => {
            errors.push(syn::Error::new_spanned(
                dist,
                "expected `Normal(mean, err)`",
            ));
            (invalid, None)
        }
    }
}

fn lower_noise(expr: &syn::Expr, errors: &mut Vec<syn::Error>) -> Option<Noise> {
    const FORMS: &str = "the noise of an output is `err` (the reported errors) or `hypot(err, s)` with `s` an intrinsic scatter parameter";
    match call_parts(expr) {
        Some((name, None)) if name == "err" => Some(Noise::Err),
        Some((name, Some(args))) if name == "hypot" => {
            if args.len() != 2 {
                errors.push(syn::Error::new_spanned(
                    expr,
                    format!(
                        "`hypot` takes 2 arguments (err, scatter), but {}",
                        given(args.len())
                    ),
                ));
                return None;
            }
            let mut valid = true;
            if single_ident(args[0]).is_none_or(|first| first != "err") {
                errors.push(syn::Error::new_spanned(
                    args[0],
                    "the first argument of `hypot` must be `err`, the reported error of each measurement",
                ));
                valid = false;
            }
            let scatter = single_ident(args[1]);
            if scatter.is_none() {
                errors.push(syn::Error::new_spanned(
                    args[1],
                    "the second argument of `hypot` is the name of an intrinsic scatter parameter",
                ));
            }
            scatter.filter(|_| valid).map(|s| Noise::Hypot(s.clone()))
        }
        _ => {
            errors.push(syn::Error::new_spanned(expr, FORMS));
            None
        }
    }
}

fn lower_expr(expr: &syn::Expr, errors: &mut Vec<syn::Error>) -> Expr {
    let tokens = expr.to_token_stream();
    let mut unsupported = |at: &dyn ToTokens, what: String| {
        errors.push(syn::Error::new_spanned(
            at.to_token_stream(),
            format!("{what}: {OPERATIONS}"),
        ));
        ExprKind::Invalid
    };

    let kind = match expr {
        syn::Expr::Paren(paren) => return lower_expr(&paren.expr, errors),
        syn::Expr::Group(group) => return lower_expr(&group.expr, errors),
        syn::Expr::Path(_) => match single_ident(expr) {
            Some(ident) => ExprKind::Name(ident.clone()),
            None => unsupported(expr, "expected a name".to_string()),
        },
        syn::Expr::Binary(binary) => match binary.op {
            BinOp::Mul(_) => ExprKind::Mul(
                Box::new(lower_expr(&binary.left, errors)),
                Box::new(lower_expr(&binary.right, errors)),
            ),
            BinOp::Add(_) => ExprKind::Add(
                Box::new(lower_expr(&binary.left, errors)),
                Box::new(lower_expr(&binary.right, errors)),
            ),
            op => {
                let symbol = op.to_token_stream().to_string();
                unsupported(&op, format!("unsupported operation `{symbol}`"))
            }
        },
        syn::Expr::Index(index) => lower_slice(index, errors),
        syn::Expr::Call(call) => match single_ident(&call.func) {
            Some(name) if name == "concat" => {
                if call.args.is_empty() {
                    errors.push(syn::Error::new_spanned(
                        expr,
                        "`concat` needs at least one input",
                    ));
                    ExprKind::Invalid
                } else {
                    ExprKind::Concat(
                        call.args
                            .iter()
                            .map(|arg| lower_expr(arg, errors))
                            .collect(),
                    )
                }
            }
            Some(name) if name == "poly" => lower_poly(expr, &call.args, errors),
            Some(name) => unsupported(name, format!("unsupported operation `{name}`")),
            None => unsupported(&call.func, "unsupported call".to_string()),
        },
        syn::Expr::MethodCall(call) => unsupported(
            &call.method,
            format!("unsupported operation `.{}()`", call.method),
        ),
        syn::Expr::Unary(unary) => {
            let symbol = unary.op.to_token_stream().to_string();
            unsupported(&unary.op, format!("unsupported operation `{symbol}`"))
        }
        syn::Expr::Lit(_) => unsupported(expr, "a number is not a per-object vector".to_string()),
        _ => unsupported(expr, "unsupported expression".to_string()),
    };
    Expr { kind, tokens }
}

fn lower_slice(index: &syn::ExprIndex, errors: &mut Vec<syn::Error>) -> ExprKind {
    let syn::Expr::Range(range) = &*index.index else {
        errors.push(syn::Error::new_spanned(
            &index.index,
            "a slice takes a half-open range, as in `z[0..2]`",
        ));
        return ExprKind::Invalid;
    };
    if let RangeLimits::Closed(dots) = range.limits {
        errors.push(syn::Error::new_spanned(
            dots,
            "write a half-open range `a..b` (elements a to b - 1)",
        ));
        return ExprKind::Invalid;
    }
    let (Some(start), Some(end)) = (&range.start, &range.end) else {
        errors.push(syn::Error::new_spanned(
            range,
            "a slice needs both bounds, as in `z[0..2]` or `z[2..K]`",
        ));
        return ExprKind::Invalid;
    };
    let input = lower_expr(&index.expr, errors);
    match (lower_bound(start, errors), lower_bound(end, errors)) {
        (Some(start), Some(end)) => ExprKind::Slice {
            input: Box::new(input),
            start,
            end,
        },
        _ => ExprKind::Invalid,
    }
}

fn lower_bound(expr: &syn::Expr, errors: &mut Vec<syn::Error>) -> Option<Bound> {
    let bound = match expr {
        syn::Expr::Lit(syn::ExprLit {
            lit: Lit::Int(int), ..
        }) => int.base10_parse().ok().map(|n| Bound::Lit(n, int.span())),
        _ => single_ident(expr).map(|ident| Bound::Name(ident.clone())),
    };
    if bound.is_none() {
        errors.push(syn::Error::new_spanned(
            expr,
            "a slice bound is an integer or a dimension name from the model header",
        ));
    }
    bound
}

fn lower_poly(
    call: &syn::Expr,
    args: &Punctuated<syn::Expr, Token![,]>,
    errors: &mut Vec<syn::Error>,
) -> ExprKind {
    if args.len() != 2 {
        errors.push(syn::Error::new_spanned(
            call,
            format!(
                "`poly` takes 2 arguments (input, degree), but {}",
                given(args.len())
            ),
        ));
        return ExprKind::Invalid;
    }
    let input = lower_expr(&args[0], errors);
    let degree = match &args[1] {
        syn::Expr::Lit(syn::ExprLit {
            lit: Lit::Int(int), ..
        }) => int.base10_parse::<u32>().ok(),
        _ => None,
    };
    match degree {
        Some(degree) if degree >= 1 => ExprKind::Poly {
            input: Box::new(input),
            degree,
        },
        Some(_) => {
            errors.push(syn::Error::new_spanned(
                &args[1],
                "the degree of `poly` must be at least 1",
            ));
            ExprKind::Invalid
        }
        None => {
            errors.push(syn::Error::new_spanned(
                &args[1],
                "the degree of `poly` is an integer literal, like `2`",
            ));
            ExprKind::Invalid
        }
    }
}
