//! Stage 3: a checked [`Plan`] to Rust.
//!
//! The generated type contains the built `::lux::dsl::Model`, the sizes it was built with
//! and the ids of its latents and parameters. Its constructor makes the plan's builder
//! calls in order, and the builder checks there every size known only at run time.

use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::{format_ident, quote};
use syn::ext::IdentExt;

use crate::ast::{ModelDecl, PriorKind, Stmt};
use crate::validate::{LatentPlan, Op, ParamPlan, Plan};

/// Writes the struct, its constructor and accessors, and its `Deref`/`AsRef` to `Model`.
pub fn emit(plan: &Plan<'_>) -> TokenStream {
    let decl = plan.decl;
    let ModelDecl {
        attrs,
        vis,
        name,
        dims,
        ..
    } = decl;
    let args: Vec<Ident> = dims.iter().map(|d| d.arg.clone()).collect();
    let symbols: Vec<&Ident> = dims.iter().map(|d| &d.symbol).collect();
    let latent_names: Vec<&Ident> = plan.latents.iter().map(|l| l.name).collect();
    let param_names: Vec<&Ident> = plan.params.iter().map(|p| p.name).collect();
    let summary = format!("\n\n# Declaration\n\n```text\n{}```", render_decl(decl));

    let builder = Ident::new("builder", Span::mixed_site());
    let built = Ident::new("model", Span::mixed_site());
    let ops = plan.ops.iter().map(|op| op_tokens(op, &builder, &args));
    let latent_ids: Vec<Ident> = (0..plan.latents.len())
        .map(|i| format_ident!("latent_id_{}", i, span = Span::mixed_site()))
        .collect();
    let latent_strings: Vec<String> = latent_names.iter().map(|n| n.unraw().to_string()).collect();
    let param_locals: Vec<Ident> = (0..plan.params.len()).map(param_local).collect();

    let new_doc = format!(
        "Builds the model graph with {}.\n\n# Errors\n\nA `GraphError` when a size is zero, or when sizes that only the numbers given \
         here decide do not fit, such as a slice bound beyond the size of its input.",
        dims.iter()
            .map(|d| format!("`{}` = {}", d.arg, d.symbol))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let dim_docs = dims
        .iter()
        .map(|d| format!("`{}`: the size passed as `{}` to `new`.", d.symbol, d.arg));
    let latent_accessors = plan
        .latents
        .iter()
        .map(|latent| latent_accessor(latent, vis));
    let param_accessors = plan.params.iter().map(|param| param_accessor(param, vis));

    quote! {
        #(#attrs)*
        #[doc = #summary]
        #[allow(non_snake_case)]
        #vis struct #name {
            model: ::lux::dsl::Model,
            #( #symbols: usize, )*
            #( #latent_names: ::lux::dsl::LatentId, )*
            #( #param_names: ::lux::dsl::ParamId, )*
        }

        #[allow(non_snake_case, dead_code, clippy::too_many_arguments)]
        impl #name {
            #[doc = #new_doc]
            #vis fn new(#( #args: usize ),*) -> ::core::result::Result<Self, ::lux::dsl::GraphError> {
                let mut #builder = ::lux::dsl::Model::builder();
                #( #ops )*
                let #built = #builder.build()?;
                #(
                    let #latent_ids = #built.latent_id(#latent_strings).ok_or_else(|| {
                        ::lux::dsl::GraphError::UnknownName { name: ::std::string::String::from(#latent_strings) }
                    })?;
                )*
                ::core::result::Result::Ok(Self {
                    model: #built,
                    #( #symbols: #args, )*
                    #( #latent_names: #latent_ids, )*
                    #( #param_names: #param_locals, )*
                })
            }

            /// The built model graph (also reached through `Deref`).
            #vis fn model(&self) -> &::lux::dsl::Model {
                &self.model
            }

            #(
                #[doc = #dim_docs]
                #vis fn #symbols(&self) -> usize {
                    self.#symbols
                }
            )*

            #( #latent_accessors )*

            #( #param_accessors )*
        }

        impl ::core::ops::Deref for #name {
            type Target = ::lux::dsl::Model;

            fn deref(&self) -> &::lux::dsl::Model {
                &self.model
            }
        }

        impl ::core::convert::AsRef<::lux::dsl::Model> for #name {
            fn as_ref(&self) -> &::lux::dsl::Model {
                &self.model
            }
        }
    }
}

fn expr_local(index: usize) -> Ident {
    format_ident!("expr_{}", index, span = Span::mixed_site())
}

fn param_local(index: usize) -> Ident {
    format_ident!("param_{}", index, span = Span::mixed_site())
}

fn op_tokens(op: &Op, builder: &Ident, args: &[Ident]) -> TokenStream {
    match op {
        Op::Latent {
            out,
            name,
            size,
            prior,
        } => {
            let out = expr_local(*out);
            let size = size.runtime(args);
            let prior = prior_tokens(prior);
            quote!(let #out = #builder.latent(#name, #size, #prior)?;)
        }
        Op::Param {
            param,
            name,
            shape,
            prior,
        } => {
            let local = param_local(*param);
            let shape = shape.iter().map(|size| size.runtime(args));
            let prior = prior_tokens(prior);
            quote!(let #local = #builder.param(#name, &[#( #shape ),*], #prior)?;)
        }
        Op::Slice {
            out,
            input,
            start,
            end,
        } => {
            let (out, input) = (expr_local(*out), expr_local(*input));
            let (start, end) = (start.runtime(args), end.runtime(args));
            quote!(let #out = #builder.slice(#input, #start, #end)?;)
        }
        Op::Concat { out, inputs } => {
            let out = expr_local(*out);
            let inputs = inputs.iter().map(|&i| expr_local(i));
            quote!(let #out = #builder.concat(&[#( #inputs ),*])?;)
        }
        Op::Poly { out, input, degree } => {
            let (out, input) = (expr_local(*out), expr_local(*input));
            let degree = Literal::u32_suffixed(*degree);
            quote!(let #out = #builder.poly(#input, #degree)?;)
        }
        Op::Linear { out, matrix, input } => {
            let (out, matrix, input) = (expr_local(*out), param_local(*matrix), expr_local(*input));
            quote!(let #out = #builder.linear(#matrix, #input)?;)
        }
        Op::AddBias { out, input, bias } => {
            let (out, input, bias) = (expr_local(*out), expr_local(*input), param_local(*bias));
            quote!(let #out = #builder.add_bias(#input, #bias)?;)
        }
        Op::Affine {
            out,
            matrix,
            input,
            bias,
        } => {
            let (out, matrix) = (expr_local(*out), param_local(*matrix));
            let (input, bias) = (expr_local(*input), param_local(*bias));
            quote!(let #out = #builder.affine(#matrix, #input, #bias)?;)
        }
        Op::Observe {
            name,
            mean,
            scatter,
        } => {
            let mean = expr_local(*mean);
            let scatter = match scatter {
                Some(param) => {
                    let param = param_local(*param);
                    quote!(::core::option::Option::Some(#param))
                }
                None => quote!(::core::option::Option::None),
            };
            quote!(#builder.observe(#name, #mean, #scatter)?;)
        }
    }
}

fn number(value: f64) -> TokenStream {
    let magnitude = Literal::f64_suffixed(value.abs());
    if value < 0.0 {
        quote!((-#magnitude))
    } else {
        quote!(#magnitude)
    }
}

fn prior_tokens(prior: &PriorKind) -> TokenStream {
    match prior {
        PriorKind::Flat => quote!(::lux::dsl::Prior::Flat),
        PriorKind::Normal { mean, scale } => {
            let (mean, scale) = (number(mean.value), number(scale.value));
            quote!(::lux::dsl::Prior::normal(#mean, #scale))
        }
        PriorKind::HalfNormal { scale } => {
            let scale = number(scale.value);
            quote!(::lux::dsl::Prior::half_normal(#scale))
        }
    }
}

fn latent_accessor(latent: &LatentPlan<'_>, vis: &syn::Visibility) -> TokenStream {
    let LatentPlan {
        name,
        docs,
        size,
        prior,
    } = latent;
    let doc = format!(
        "The latent `{name}` ([{size}] per object, prior {prior}): its columns of the joint \
         latent matrix of `params`, an N×{size} view."
    );
    let separator = (!docs.is_empty()).then(|| quote!(#[doc = ""]));
    quote! {
        #( #docs )*
        #separator
        #[doc = #doc]
        #vis fn #name<'a>(&self, params: &'a ::lux::dsl::Params) -> ::lux::dsl::ndarray::ArrayView2<'a, f64> {
            let node = &self.model.latents()[self.#name.index()];
            params.latents().slice(::lux::dsl::ndarray::s![.., node.offset..node.offset + node.size])
        }
    }
}

fn param_accessor(param: &ParamPlan<'_>, vis: &syn::Visibility) -> TokenStream {
    let ParamPlan {
        name,
        docs,
        rank,
        shape,
        prior,
    } = param;
    let key = name.unraw().to_string();
    let (what, output, body) = match rank {
        2 => {
            let missing = format!("parameter `{key}` is missing from `params` or is not a matrix");
            (
                "matrix",
                quote!(::lux::dsl::ndarray::ArrayView2<'a, f64>),
                quote!(params.matrix(#key).expect(#missing)),
            )
        }
        1 => {
            let missing = format!("parameter `{key}` is missing from `params` or is not a vector");
            (
                "vector",
                quote!(::lux::dsl::ndarray::ArrayView1<'a, f64>),
                quote!(params.vector(#key).expect(#missing)),
            )
        }
        _ => {
            let missing = format!("parameter `{key}` is missing from `params` or is not a scalar");
            (
                "scalar",
                quote!(f64),
                quote! {
                    params
                        .get(#key)
                        .and_then(|value| value.view().into_dimensionality::<::lux::dsl::ndarray::Ix0>().ok())
                        .map(|value| *value.into_scalar())
                        .expect(#missing)
                },
            )
        }
    };
    let doc = format!(
        "The parameter `{name}`, a {what} of shape {shape} (prior {prior}), from `params`.\n\n\
         # Panics\n\nIf `params` holds no {what} `{key}` (parameters of another model)."
    );
    let separator = (!docs.is_empty()).then(|| quote!(#[doc = ""]));
    quote! {
        #( #docs )*
        #separator
        #[doc = #doc]
        #vis fn #name<'a>(&self, params: &'a ::lux::dsl::Params) -> #output {
            #body
        }
    }
}

/// Renders the declaration as written, for the documentation of the generated type.
fn render_decl(decl: &ModelDecl) -> String {
    let header: Vec<String> = decl
        .dims
        .iter()
        .map(|d| format!("{}: {}", d.arg, d.symbol))
        .collect();
    let mut out = format!("model {}({}) {{\n", decl.name, header.join(", "));
    for stmt in &decl.stmts {
        let line = match stmt {
            Stmt::Latent {
                name, shape, prior, ..
            }
            | Stmt::Param {
                name, shape, prior, ..
            } => {
                let keyword = if matches!(stmt, Stmt::Latent { .. }) {
                    "latent"
                } else {
                    "param"
                };
                let shape = shape.as_ref().map(ToString::to_string).unwrap_or_default();
                let prior = prior
                    .as_ref()
                    .map(|p| p.kind.to_string())
                    .unwrap_or_default();
                format!("{keyword} {name}: {shape} ~ {prior};")
            }
            Stmt::Let { name, shape, value } => match shape {
                Some(shape) => format!("let {name}: {shape} = {value};"),
                None => format!("let {name} = {value};"),
            },
            Stmt::Observe {
                name,
                shape,
                mean,
                noise,
            } => {
                let shape = shape.as_ref().map(|s| format!(": {s}")).unwrap_or_default();
                let noise = noise.as_ref().map(ToString::to_string).unwrap_or_default();
                format!("observe {name}{shape} ~ Normal({mean}, {noise});")
            }
            Stmt::Broken { .. } => continue,
        };
        out.push_str("    ");
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn render_decl_canonical() {
        let (models, errors) = crate::parse::parse(quote! {
            model Cannon(labels: L, pixels: P) {
                latent y: [L] ~ Flat;
                param theta: [P, _] ~ Normal(0.0, 10);
                param s: [] ~ HalfNormal(0.1);
                let features = poly((y), 2);
                observe label ~ Normal(y[0..L], err);
                observe flux: [P] ~ Normal(theta * features + s, hypot(err, s));
            }
        })
        .unwrap();
        assert!(errors.is_empty());
        let expected = "model Cannon(labels: L, pixels: P) {
    latent y: [L] ~ Flat;
    param theta: [P, _] ~ Normal(0.0, 10.0);
    param s: [] ~ HalfNormal(0.1);
    let features = poly(y, 2);
    observe label ~ Normal(y[0..L], err);
    observe flux: [P] ~ Normal(theta * features + s, hypot(err, s));
}
";
        assert_eq!(render_decl(&models[0]), expected);
    }
}
