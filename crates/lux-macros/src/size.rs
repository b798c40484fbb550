//! Sizes as symbols.
//!
//! A size is an integer combination of header dimensions and polynomial feature counts,
//! such as `K - 2` or `poly(L, 2)`. Two sizes agree when their symbols agree: `[L]` and
//! `[P]` differ even if the caller later passes the same number for both. The same
//! symbol is turned into `usize` arithmetic when a size inferred from `_` is needed at
//! run time.

use std::collections::BTreeMap;

use proc_macro2::{Ident, Literal, TokenStream};
use quote::quote;

/// A term of a size: a header dimension or the feature count of `poly(size, degree)`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Atom {
    /// The header dimension at this position.
    Dim(usize),
    /// C(n + degree, degree) for a non-constant n.
    Poly(Size, u32),
}

/// `constant + Σ coefficient · atom`, with no zero coefficient stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size {
    terms: BTreeMap<Atom, i64>,
    constant: i64,
}

impl Size {
    /// Makes a literal size.
    pub fn lit(n: usize) -> Self {
        Size {
            terms: BTreeMap::new(),
            constant: i64::try_from(n).unwrap_or(i64::MAX),
        }
    }

    /// Makes the size of the header dimension at `index`.
    pub fn dim(index: usize) -> Self {
        Size {
            terms: BTreeMap::from([(Atom::Dim(index), 1)]),
            constant: 0,
        }
    }

    /// Adds `other`.
    pub fn plus(&self, other: &Size) -> Size {
        self.combine(other, 1)
    }

    /// Subtracts `other`.
    pub fn minus(&self, other: &Size) -> Size {
        self.combine(other, -1)
    }

    fn combine(&self, other: &Size, sign: i64) -> Size {
        let mut out = self.clone();
        out.constant += sign * other.constant;
        for (atom, coefficient) in &other.terms {
            let slot = out.terms.entry(atom.clone()).or_insert(0);
            *slot += sign * coefficient;
            if *slot == 0 {
                out.terms.remove(atom);
            }
        }
        out
    }

    /// Counts the monomials of total degree ≤ `degree` in `self` variables.
    pub fn poly(&self, degree: u32) -> Size {
        let count = self
            .constant_value()
            .and_then(|n| u64::try_from(n).ok())
            .and_then(|n| monomial_count(n, degree));
        match count {
            Some(count) => Size::lit(count),
            None => Size {
                terms: BTreeMap::from([(Atom::Poly(self.clone(), degree), 1)]),
                constant: 0,
            },
        }
    }

    /// Returns the value when the size names no dimension.
    pub fn constant_value(&self) -> Option<i64> {
        self.terms.is_empty().then_some(self.constant)
    }

    /// Renders the size as the user would write it, with `dims` the header symbols.
    pub fn render(&self, dims: &[Ident]) -> String {
        let mut parts: Vec<(i64, String)> = self
            .terms
            .iter()
            .map(|(atom, &coefficient)| (coefficient, render_atom(atom, dims)))
            .collect();
        if self.constant != 0 || parts.is_empty() {
            parts.push((self.constant, String::new()));
        }

        let mut out = String::new();
        for (position, (coefficient, text)) in parts.iter().enumerate() {
            let magnitude = coefficient.unsigned_abs();
            let sign = match (position, *coefficient < 0) {
                (0, true) => "-",
                (0, false) => "",
                (_, true) => " - ",
                (_, false) => " + ",
            };
            out.push_str(sign);
            match (text.is_empty(), magnitude) {
                (true, _) => out.push_str(&magnitude.to_string()),
                (false, 1) => out.push_str(text),
                (false, _) => out.push_str(&format!("{magnitude}*{text}")),
            }
        }
        out
    }

    /// Writes `usize` arithmetic for the size, with `args` the constructor arguments
    /// that contain the header dimensions.
    ///
    /// The positive terms are summed before the negative ones are taken away, so no step
    /// underflows as long as the whole size is non-negative (the builder has checked
    /// every slice inside it by the time this runs).
    pub fn runtime(&self, args: &[Ident]) -> TokenStream {
        let mut positive = Vec::new();
        let mut negative = Vec::new();
        for (atom, &coefficient) in &self.terms {
            let atom = runtime_atom(atom, args);
            let magnitude = Literal::u64_unsuffixed(coefficient.unsigned_abs());
            let term = if coefficient.unsigned_abs() == 1 {
                atom
            } else {
                quote!(#magnitude * #atom)
            };
            if coefficient > 0 {
                positive.push(term);
            } else {
                negative.push(term);
            }
        }
        let constant = Literal::usize_suffixed(
            usize::try_from(self.constant.unsigned_abs()).unwrap_or(usize::MAX),
        );
        let constant = quote!(#constant);
        if self.constant > 0 || positive.is_empty() {
            positive.push(constant);
        } else if self.constant < 0 {
            negative.push(constant);
        }

        if negative.is_empty() {
            quote!((#(#positive)+*))
        } else {
            quote!(((#(#positive)+*) - (#(#negative)+*)))
        }
    }
}

fn render_atom(atom: &Atom, dims: &[Ident]) -> String {
    match atom {
        Atom::Dim(index) => dims[*index].to_string(),
        Atom::Poly(input, degree) => format!("poly({}, {degree})", input.render(dims)),
    }
}

fn runtime_atom(atom: &Atom, args: &[Ident]) -> TokenStream {
    match atom {
        Atom::Dim(index) => {
            let arg = &args[*index];
            quote!(#arg)
        }
        Atom::Poly(input, degree) => {
            let input = input.runtime(args);
            let degree = Literal::u32_suffixed(*degree);
            quote!(::lux::dsl::poly_size(#input, #degree))
        }
    }
}

/// C(n + degree, degree), or `None` when it does not fit in an `i64`.
fn monomial_count(n: u64, degree: u32) -> Option<usize> {
    // After step i the running value is C(n + i, i), so every division is exact.
    let mut count: u128 = 1;
    for i in 1..=u128::from(degree) {
        count = count.checked_mul(u128::from(n) + i)? / i;
    }
    i64::try_from(count)
        .ok()
        .and_then(|c| usize::try_from(c).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proc_macro2::Span;

    fn dims() -> Vec<Ident> {
        ["K", "L", "P"]
            .iter()
            .map(|d| Ident::new(d, Span::call_site()))
            .collect()
    }

    #[test]
    fn slice_pieces_sum_to_whole() {
        let k = Size::dim(0);
        let head = Size::lit(2);
        let tail = k.minus(&Size::lit(2));
        assert_eq!(head.plus(&tail), k);
        assert_eq!(tail.render(&dims()), "K - 2");
    }

    #[test]
    fn distinct_dimensions_differ() {
        assert_ne!(Size::dim(1), Size::dim(2));
        assert_ne!(Size::dim(1), Size::lit(2));
    }

    #[test]
    fn poly_of_constant_is_counted() {
        assert_eq!(Size::lit(2).poly(2), Size::lit(6));
        assert_eq!(Size::lit(3).poly(2), Size::lit(10));
        assert_eq!(Size::lit(2).poly(3), Size::lit(10));
        assert_eq!(Size::lit(8).poly(1), Size::lit(9));
    }

    #[test]
    fn poly_of_dimension_is_symbolic() {
        let l = Size::dim(1);
        assert_eq!(l.poly(2), l.poly(2));
        assert_ne!(l.poly(2), l.poly(3));
        assert_eq!(l.poly(2).render(&dims()), "poly(L, 2)");
        assert_eq!(
            l.poly(2).plus(&Size::lit(1)).render(&dims()),
            "poly(L, 2) + 1"
        );
    }

    #[test]
    fn render_signs_and_coefficients() {
        let k = Size::dim(0);
        let two_k = k.plus(&k);
        assert_eq!(two_k.render(&dims()), "2*K");
        assert_eq!(Size::lit(4).minus(&k).render(&dims()), "-K + 4");
        assert_eq!(k.minus(&k).render(&dims()), "0");
    }

    #[test]
    fn runtime_subtracts_last() {
        let k = Size::dim(0);
        let tokens = k.minus(&Size::lit(2)).runtime(&dims()).to_string();
        assert_eq!(tokens, "((K) - (2usize))");
        assert_eq!(Size::lit(3).runtime(&dims()).to_string(), "(3usize)");
    }
}
