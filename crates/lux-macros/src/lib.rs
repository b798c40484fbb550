//! The `lux_model!` macro: a model declaration in the words of numpyro or Stan, turned
//! into calls to the `lux_dsl` model builder.
//!
//! Use it through the `lux` crate, as `lux::lux_model`; its documentation is there and
//! on [`lux_model!`]. The macro works in three stages, one module each. `parse` reads
//! the tokens into a small syntax tree. `validate` resolves names and checks sizes,
//! and reports every mistake it finds at the token at fault. `codegen` writes the type
//! and its constructor.

mod ast;
mod codegen;
mod parse;
mod size;
mod validate;

use proc_macro2::TokenStream;

/// Declares a model of stellar spectra and labels as a Rust type.
///
/// ```
/// use lux::lux_model;
///
/// lux_model! {
///     /// Lux: labels and spectra, both linear in one latent vector per star.
///     pub model Lux(latents: K, labels: L, pixels: P) {
///         latent z: [K] ~ Normal(0.0, 1.0);
///         param A: [L, K] ~ Normal(0.0, 1.0);
///         param B: [P, K] ~ Normal(0.0, 1.0);
///         param s: [P] ~ HalfNormal(1.0);
///         observe label: [L] ~ Normal(A * z, err);
///         observe flux: [P] ~ Normal(B * z, hypot(err, s));
///     }
/// }
///
/// # fn main() -> Result<(), lux::dsl::GraphError> {
/// let lux = Lux::new(8, 2, 128)?; // sizes in the order of the header
/// assert_eq!((lux.K(), lux.L(), lux.P()), (8, 2, 128));
/// assert_eq!(lux.latent_size(), 8); // `Lux` derefs to `lux::dsl::Model`
/// assert_eq!(lux.describe(lux.observe("flux").unwrap().mean), "B * z");
/// # Ok(())
/// # }
/// ```
///
/// # Grammar
///
/// ```text
/// model     := attribute* visibility "model" Name "(" dim ("," dim)* ")" "{" statement* "}"
/// dim       := argument ":" SYMBOL
/// statement := doc-comment* (latent | param | let | observe) ";"
/// latent    := "latent" name ":" "[" size "]" "~" ("Normal(" number "," number ")" | "Flat")
/// param     := "param" name ":" "[" (size ("," size)?)? "]" "~" prior
/// let       := "let" name (":" "[" size "]")? "=" expr
/// observe   := "observe" name (":" "[" size "]")? "~" "Normal(" expr "," noise ")"
/// prior     := "Normal(" number "," number ")" | "HalfNormal(" number ")" | "Flat"
/// noise     := "err" | "hypot(err," param ")"
/// size      := integer | SYMBOL | "_"
/// expr      := latent | let                    a name
///            | param "*" expr                  matrix-vector product
///            | expr "+" param                  bias; `A * x + b` is one affine map
///            | expr "[" bound ".." bound "]"   elements bound..bound (end excluded)
///            | "concat(" expr ("," expr)* ")"  stacked end to end
///            | "poly(" expr "," integer ")"    monomials up to that total degree
///            | "(" expr ")"
/// bound     := integer | SYMBOL
/// ```
///
/// - The header names the sizes: `pixels: P` makes `P` a size symbol and `pixels` an
///   argument of `new`. Several models may be declared in one call.
/// - `latent` declares a per-object vector with a `Normal` or `Flat` prior. Each latent
///   takes its own columns of the joint N×K latent matrix, in declaration order.
/// - `param` declares a global scalar `[]`, vector `[D]` or matrix `[D1, D2]`.
/// - `let` names an expression; it must come before its uses. Latents and parameters
///   may be declared anywhere in the body.
/// - `observe` declares an output, `y ~ Normal(mean, err)` with `err` the reported error
///   of each measurement, or `Normal(mean, hypot(err, s))`, that is
///   `sqrt(err² + s²)`, with `s` an intrinsic scatter parameter of shape `[]` or of the
///   output's size. Its shape may be left out.
/// - Prior arguments are number literals.
///
/// # Sizes
///
/// Sizes are compared as symbols, at compile time: a `[L, K]` matrix cannot take an
/// input of size `P`, even if the same number is later passed for `K` and `P`. Give
/// sizes that must agree the same symbol. A slice `z[2..K]` has size `K - 2`, and
/// `poly(y, 2)` of a `y` of size `L` has size `poly(L, 2)`, the number of monomials
/// of degree ≤ 2 in L variables, C(L + 2, 2).
///
/// `_` in a parameter shape is a size read off the parameter's first use. It can be
/// the input size of a matrix in `A * x` (its second dimension only), the size of a
/// bias in `x + b`, or the size of the output a scatter `[_]` belongs to. Such a parameter
/// is declared to the builder at that first use, so it comes after the parameters
/// written without `_` in `Model::params()`.
///
/// Whatever depends on the numbers given to `new` (a slice bound that is a symbol, a
/// zero size) is checked by the builder when `new` runs, and reported as a
/// `GraphError`.
///
/// # What is generated
///
/// For `pub model Lux(latents: K, ...)`: a `pub struct Lux` carrying the declaration's
/// attributes (doc comments, derives) and holding the built `lux::dsl::Model`, the
/// sizes and the ids of latents and parameters, with
///
/// - `Lux::new(latents, ...) -> Result<Lux, GraphError>`, which makes the builder calls;
/// - `Deref<Target = Model>` and `AsRef<Model>`, so `&lux` works wherever `&Model` does;
/// - `lux.model()`, the graph itself;
/// - one getter per size symbol: `lux.K()`;
/// - one method per latent, `lux.z(&params)`, its N×D columns of the latent matrix;
/// - one method per parameter, `lux.B(&params)`, an `ArrayView2` for a matrix, an
///   `ArrayView1` for a vector and an `f64` for a scalar. It panics when `params` lacks
///   the parameter.
///
/// Methods take the names as written (`A`, `K`), with `non_snake_case` allowed. An
/// accessor hides a `Model` method of the same name; reach that one through
/// `lux.model()`. The names `new`, `model` and `err` are reserved.
///
/// # Checks at compile time
///
/// Unknown and duplicate names; a distribution other than `Normal`, `HalfNormal` and
/// `Flat`, or with the wrong number of arguments; a `HalfNormal` prior on a latent;
/// any operation outside the grammar (`exp(z)`, `z * z`, `A * B`); sizes that disagree
/// as declared (a matrix and its input, a bias and its input, an output and its mean,
/// a scatter and its output, a slice end beyond a literal size); observing a name that
/// is already a latent or a parameter, or using an output in an expression; a scatter
/// that is not a parameter, or has a `Normal` prior; `hypot` whose first argument is not
/// `err`; a latent that no output depends on; a `_` that no use determines.
///
/// # Examples
///
/// The Cannon: the labels are the latents, observed directly, and the flux is linear in
/// their quadratic polynomial features. `theta` is `[P, poly(L, 2)]`, read off its use.
///
/// ```
/// use lux::lux_model;
///
/// lux_model! {
///     /// The Cannon: labels are the latents; flux is quadratic in them.
///     pub model Cannon(labels: L, pixels: P) {
///         latent y: [L] ~ Flat;
///         param theta: [P, _] ~ Normal(0.0, 10.0);
///         param s: [P] ~ HalfNormal(0.1);
///         observe label: [L] ~ Normal(y, err);
///         observe flux: [P] ~ Normal(theta * poly(y, 2), hypot(err, s));
///     }
/// }
///
/// # fn main() -> Result<(), lux::dsl::GraphError> {
/// let cannon = Cannon::new(3, 100)?;
/// let theta = &cannon.params()[cannon.param_id("theta").unwrap().index()];
/// assert_eq!(theta.shape, [100, 10]);
/// # Ok(())
/// # }
/// ```
///
/// Slices, `let`, concatenation and an affine map, with a size symbol as a slice bound:
///
/// ```
/// use lux::lux_model;
///
/// lux_model! {
///     model Split(latents: K, labels: L, pixels: P) {
///         latent z: [K] ~ Normal(0.0, 1.0);
///         latent w: [2] ~ Normal(0.0, 1.0);
///         param A: [L, 2] ~ Normal(0.0, 1.0);
///         param B: [P, _] ~ Normal(0.0, 1.0);
///         param b: [P] ~ Normal(0.0, 1.0);
///         let features = concat(z[2..K], w);
///         observe label: [L] ~ Normal(A * z[0..2], err);
///         observe flux: [P] ~ Normal(B * features + b, err);
///     }
/// }
///
/// # fn main() -> Result<(), lux::dsl::GraphError> {
/// let split = Split::new(6, 2, 50)?;
/// assert_eq!(split.describe(split.observe("flux").unwrap().mean), "B * concat(z[2..6], w) + b");
/// assert!(Split::new(1, 2, 50).is_err()); // z[0..2] needs K ≥ 2
/// # Ok(())
/// # }
/// ```
///
/// A mistake is reported where it is made:
///
/// ```compile_fail
/// use lux::lux_model;
///
/// lux_model! {
///     model Wrong(latents: K, labels: L, pixels: P) {
///         latent z: [K] ~ Normal(0.0, 1.0);
///         param A: [L, K] ~ Normal(0.0, 1.0);
///         observe flux: [P] ~ Normal(A * z, err); // `A * z` has size L
///     }
/// }
/// # fn main() {}
/// ```
#[proc_macro]
pub fn lux_model(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    expand(input.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Parses, checks and expands every model in `input`, or returns all errors combined.
fn expand(input: TokenStream) -> syn::Result<TokenStream> {
    let (models, mut errors) = parse::parse(input)?;

    let mut plans = Vec::new();
    for model in &models {
        match validate::check(model) {
            Ok(plan) => plans.push(plan),
            Err(found) => errors.extend(found),
        }
    }

    let mut errors = errors.into_iter();
    if let Some(mut combined) = errors.next() {
        combined.extend(errors);
        return Err(combined);
    }
    Ok(plans.iter().map(codegen::emit).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn messages(input: TokenStream) -> Vec<String> {
        match expand(input) {
            Ok(_) => Vec::new(),
            Err(error) => error.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn valid_model_has_no_errors() {
        let found = messages(quote! {
            pub model Lux(latents: K, labels: L, pixels: P) {
                latent z: [K] ~ Normal(0.0, 1.0);
                param A: [L, K] ~ Normal(0.0, 1.0);
                param B: [P, K] ~ Normal(0.0, 1.0);
                param s: [P] ~ HalfNormal(1.0);
                observe label: [L] ~ Normal(A * z, err);
                observe flux: [P] ~ Normal(B * z, hypot(err, s));
            }
        });
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn errors_are_all_collected() {
        let found = messages(quote! {
            model M(latents: K, pixels: P) {
                latent z: [K] ~ Cauchy(0.0, 1.0);
                param A: [P, K] ~ Normal(0.0);
                observe flux: [P] ~ Normal(A * q, err);
                observe y: [P] ~ Normal(exp(z), err);
            }
        });
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found[0].contains("unsupported distribution `Cauchy`"));
        assert!(found[1].contains("takes 2 arguments (mean, scale), but 1 was given"));
        assert!(found[2].contains("unsupported operation `exp`"));
        assert!(found[3].contains("unknown name `q`"));
    }

    #[test]
    fn broken_statement_keeps_its_name() {
        // The param's shape does not parse, so only that error is reported, not an
        // unknown `A` at its use.
        let found = messages(quote! {
            model M(latents: K, pixels: P) {
                latent z: [K] ~ Normal(0.0, 1.0);
                param A: P K ~ Normal(0.0, 1.0);
                observe flux: [P] ~ Normal(A * z, err);
            }
        });
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("shape in brackets"), "{found:?}");
    }

    #[test]
    fn sizes_agree_through_slices_and_concat() {
        let found = messages(quote! {
            model M(latents: K, pixels: P) {
                latent z: [K] ~ Normal(0.0, 1.0);
                param B: [P, K] ~ Normal(0.0, 1.0);
                observe flux: [P] ~ Normal(B * concat(z[0..2], z[2..K]), err);
            }
        });
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn hole_read_off_first_use() {
        let found = messages(quote! {
            model M(labels: L, pixels: P) {
                latent y: [L] ~ Flat;
                param theta: [P, _] ~ Normal(0.0, 1.0);
                observe flux: [P] ~ Normal(theta * poly(y, 2), err);
                observe again: [P] ~ Normal(theta * y, err);
            }
        });
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0],
            "`theta` has shape [P, poly(L, 2)], so it takes an input of size poly(L, 2), but `y` has size L"
        );
    }

    #[test]
    fn empty_slice_of_literals() {
        let found = messages(quote! {
            model M(latents: K) {
                latent z: [4] ~ Normal(0.0, 1.0);
                observe a ~ Normal(z[3..3], err);
                observe b ~ Normal(z[2..K], err);
            }
        });
        assert_eq!(
            found,
            ["the slice `z[3..3]` is empty: its end must be greater than its start"]
        );
    }

    #[test]
    fn scatter_with_normal_prior() {
        let found = messages(quote! {
            model M(latents: K, pixels: P) {
                latent z: [K] ~ Normal(0.0, 1.0);
                param B: [P, K] ~ Normal(0.0, 1.0);
                param s: [] ~ Normal(0.0, 1.0);
                observe flux ~ Normal(B * z, hypot(err, s));
            }
        });
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("give it a `HalfNormal` or `Flat` prior"),
            "{found:?}"
        );
    }
}
