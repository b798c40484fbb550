//! The scatter step: with the means fixed, each element of an intrinsic scatter `s` is
//! the exact minimizer of a one-dimensional problem. With `t = s²` and `v = σ² + t`,
//!
//! ```text
//! f(t)  = ½ Σ_n [r_n²/v_n + ln v_n] + t/(2σ_s²)        (HalfNormal(σ_s); no term if flat)
//! f'(t) = ½ Σ_n [1/v_n − r_n²/v_n²] + 1/(2σ_s²)
//! ```
//!
//! summed over the objects observing that element (over every element for a scalar
//! scatter). When `f'(0) ≥ 0` the minimum is on the boundary, `s = 0`; otherwise the
//! root of `f'` is bracketed and found by bisection safeguarding Newton steps.

use lux_dsl::{Dataset, Model, Params, Prior};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

use crate::error::FitError;

/// Bisection and Newton steps allowed per element; each at least halves the bracket.
const MAX_ITERATIONS: usize = 200;

/// Solves every element of the scatter of output `observe` exactly.
pub(crate) fn solve_scatter(model: &Model, params: &mut Params, data: &Dataset, observe: usize) -> Result<(), FitError> {
    let obs = &model.observes()[observe];
    let id = obs.scatter.expect("a scatter block has a scatter parameter");
    let node = model.param(id);
    let out = data.output(&obs.name).expect("the output is present");
    let mean = model.evaluate(params, obs.mean)?;
    let prior_slope = match node.prior {
        Prior::HalfNormal { scale } => 0.5 / (scale * scale),
        _ => 0.0,
    };

    // Squared residuals and reported variances of the observed elements, by column.
    let p = obs.size;
    let mut columns: Vec<Vec<(f64, f64)>> = vec![Vec::new(); p];
    for ((m, y), w) in mean.rows().into_iter().zip(out.values().rows()).zip(out.ivar().rows()) {
        for j in 0..p {
            if w[j] > 0.0 {
                let r = y[j] - m[j];
                columns[j].push((r * r, 1.0 / w[j]));
            }
        }
    }

    let values: Vec<f64> = if node.shape.is_empty() {
        let all: Vec<(f64, f64)> = columns.into_iter().flatten().collect();
        vec![minimize_variance(&all, prior_slope).sqrt()]
    } else {
        columns.par_iter().map(|c| minimize_variance(c, prior_slope).sqrt()).collect()
    };
    params.insert(&node.name, ArrayD::from_shape_vec(IxDyn(&node.shape), values).expect("declared shape"));
    Ok(())
}

/// First and second derivative of f at `t` for the (squared residual, variance) pairs.
fn derivatives(terms: &[(f64, f64)], prior_slope: f64, t: f64) -> (f64, f64) {
    let mut first = prior_slope;
    let mut second = 0.0;
    for &(r2, variance) in terms {
        let inv = 1.0 / (variance + t);
        first += 0.5 * (inv - r2 * inv * inv);
        second += 0.5 * (2.0 * r2 * inv * inv * inv - inv * inv);
    }
    (first, second)
}

/// Returns the t ≥ 0 minimizing f (see the module documentation).
fn minimize_variance(terms: &[(f64, f64)], prior_slope: f64) -> f64 {
    if terms.is_empty() || derivatives(terms, prior_slope, 0.0).0 >= 0.0 {
        return 0.0;
    }

    // f' < 0 at 0 and, for large t, f' → prior_slope + n/(2t) > 0: bracket the root.
    let mut low = 0.0;
    let mut high = terms.iter().map(|&(r2, v)| r2 + v).fold(0.0, f64::max).max(f64::MIN_POSITIVE);
    // 2100 doublings pass f64::MAX from the smallest positive value, so the cap only
    // guards against a NaN derivative.
    for _ in 0..2100 {
        if derivatives(terms, prior_slope, high).0 >= 0.0 {
            break;
        }
        low = high;
        high *= 2.0;
    }

    let mut t = 0.5 * (low + high);
    for _ in 0..MAX_ITERATIONS {
        let (first, second) = derivatives(terms, prior_slope, t);
        if first < 0.0 {
            low = t;
        } else {
            high = t;
        }
        let newton = t - first / second;
        t = if second > 0.0 && newton > low && newton < high { newton } else { 0.5 * (low + high) };
        if high - low <= 1e-14 * high || first == 0.0 {
            break;
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_variances_have_closed_form() {
        // With every σ² = a and a flat prior, f'(t) = 0 at t = mean(r²) − a.
        let terms: Vec<(f64, f64)> = [0.5, 1.5, 2.0, 4.0].iter().map(|&r2| (r2, 0.25)).collect();
        let t = minimize_variance(&terms, 0.0);
        assert!((t - (2.0 - 0.25)).abs() < 1e-12, "{t}");
    }

    #[test]
    fn small_residuals_give_zero_scatter() {
        let terms = vec![(0.01, 1.0), (0.02, 1.0)];
        assert_eq!(minimize_variance(&terms, 0.0), 0.0);
    }

    #[test]
    fn prior_shrinks_the_scatter() {
        let terms: Vec<(f64, f64)> = (0..50).map(|i| (1.0 + 0.01 * i as f64, 0.1)).collect();
        let flat = minimize_variance(&terms, 0.0);
        let shrunk = minimize_variance(&terms, 5.0);
        assert!(shrunk < flat);
        assert!(derivatives(&terms, 5.0, shrunk).0.abs() < 1e-9);
    }
}
