//! Shared pieces of the exact solves: observation weights, packed outer products and
//! batched Cholesky solves of many small normal-equation systems.

use std::borrow::Cow;

use faer::linalg::cholesky::llt::factor::{LltParams, LltRegularization, cholesky_in_place, cholesky_in_place_scratch};
use faer::linalg::cholesky::llt::solve::solve_in_place;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::{Mat, MatMut, MatRef, Par, Spec};
use lux_dsl::{Dataset, Model, Params};
use ndarray::Array2;
use rayon::prelude::*;

/// Computes the weights of output `observe`, its intrinsic scatter added in quadrature:
/// `w = 1/(σ² + s²)`, 0 where missing. Without scatter they are the data's inverse
/// variances, borrowed. `None` for an output absent from the data.
pub(crate) fn output_weights<'a>(
    model: &Model,
    params: &Params,
    data: &'a Dataset,
    observe: usize,
) -> Option<Cow<'a, Array2<f64>>> {
    let obs = &model.observes()[observe];
    let out = data.output(&obs.name)?;
    Some(match model.scatter_values(params, obs) {
        None => Cow::Borrowed(out.ivar()),
        Some(s) => {
            let mut w = out.ivar().clone();
            for mut row in w.rows_mut() {
                for (x, &sp) in row.iter_mut().zip(&s) {
                    if *x > 0.0 {
                        *x = 1.0 / (1.0 / *x + sp * sp);
                    }
                }
            }
            Cow::Owned(w)
        }
    })
}

/// Number of entries of the upper triangle of a d×d matrix.
pub(crate) fn packed_len(d: usize) -> usize {
    d * (d + 1) / 2
}

/// Writes the upper triangle of `x xᵀ` for each row `x` of `rows` (n×d) into `out` (n×packed).
pub(crate) fn packed_outer(rows: &[f64], d: usize, out: &mut [f64]) {
    let t = packed_len(d);
    for (x, o) in rows.chunks_exact(d).zip(out.chunks_exact_mut(t)) {
        let mut idx = 0;
        for i in 0..d {
            for j in i..d {
                o[idx] = x[i] * x[j];
                idx += 1;
            }
        }
    }
}

/// Views a row-major n×m matrix as a faer matrix.
pub(crate) fn view(data: &[f64], n: usize, m: usize) -> MatRef<'_, f64> {
    MatRef::from_row_major_slice(data, n, m)
}

/// Views a row-major n×m matrix as a mutable faer matrix.
pub(crate) fn view_mut(data: &mut [f64], n: usize, m: usize) -> MatMut<'_, f64> {
    MatMut::from_row_major_slice_mut(data, n, m)
}

/// `dst += lhs · rhs` with faer's matrix multiply.
pub(crate) fn gemm_add(dst: MatMut<'_, f64>, lhs: MatRef<'_, f64>, rhs: MatRef<'_, f64>, par: Par) {
    faer::linalg::matmul::matmul(dst, faer::Accum::Add, lhs, rhs, 1.0, par);
}

/// Solves one d×d system per row: row i of `packed` contains the upper triangle of the
/// normal matrix without its ridge, row i of `rhs` the right-hand side (overwritten by
/// the solution). `ridge[j]` and `ridge_rhs[j]` (prior precision and precision × mean)
/// are added to every system. Returns the first row whose matrix is not positive
/// definite.
pub(crate) fn solve_packed(packed: &[f64], rhs: &mut [f64], d: usize, ridge: &[f64], ridge_rhs: &[f64]) -> Result<(), usize> {
    let t = packed_len(d);
    let rows = rhs.len() / d;
    let min_len = (4096 / (d * d)).max(16);
    rhs.par_chunks_mut(d)
        .zip(packed.par_chunks(t))
        .enumerate()
        .with_min_len(min_len)
        .try_for_each_init(
            || {
                let scratch = cholesky_in_place_scratch::<f64>(d, Par::Seq, Spec::<LltParams, f64>::default());
                (Mat::<f64>::zeros(d, d), MemBuffer::new(scratch))
            },
            |(matrix, buffer), (row, (b, upper))| {
                let mut idx = 0;
                for i in 0..d {
                    for j in i..d {
                        matrix[(i, j)] = upper[idx];
                        matrix[(j, i)] = upper[idx];
                        idx += 1;
                    }
                    matrix[(i, i)] += ridge[i];
                    b[i] += ridge_rhs[i];
                }
                factor(matrix, buffer, row, ridge)?;
                let stack = MemStack::new(buffer);
                let rhs = MatMut::from_column_major_slice_mut(b, d, 1);
                solve_in_place(matrix.as_ref(), rhs, Par::Seq, stack);
                Ok::<(), usize>(())
            },
        )?;
    debug_assert_eq!(rows * d, rhs.len());
    Ok(())
}

/// Pivots of a Cholesky factor smaller than this fraction of their diagonal element
/// mean the matrix is singular to working precision: about 14 of 16 digits are lost.
const NEAR_SINGULAR: f64 = 1e-14;

/// Factors the symmetric matrix in place (lower Cholesky factor). Fails with `row` when
/// the matrix is not positive definite, or when it is singular to working precision
/// along a direction where `ridge` adds no prior precision. A positive ridge keeps the
/// matrix at least that far from singular, so a tiny pivot there only means a badly
/// scaled but well-posed system (one enormous weight, say).
fn factor(matrix: &mut Mat<f64>, buffer: &mut MemBuffer, row: usize, ridge: &[f64]) -> Result<(), usize> {
    let d = matrix.nrows();
    let mut diagonal = [0.0f64; 64];
    let keep = d <= diagonal.len();
    if keep {
        (0..d).for_each(|i| diagonal[i] = matrix[(i, i)]);
    }
    let stack = MemStack::new(buffer);
    cholesky_in_place(
        matrix.as_mut(),
        LltRegularization::default(),
        Par::Seq,
        stack,
        Spec::<LltParams, f64>::default(),
    )
    .map_err(|_| row)?;
    if keep && (0..d).any(|i| ridge[i] == 0.0 && matrix[(i, i)] * matrix[(i, i)] <= NEAR_SINGULAR * diagonal[i]) {
        return Err(row);
    }
    Ok(())
}

/// Inverts one d×d system per row of `packed` (upper triangles, as in [`solve_packed`],
/// with `ridge` added to the diagonal), returning the inverses row-major, n×d×d.
/// A row whose matrix is not positive definite gets NaN and is listed in the second
/// value.
pub(crate) fn invert_packed(packed: &[f64], d: usize, ridge: &[f64]) -> (Vec<f64>, Vec<usize>) {
    let t = packed_len(d);
    let rows = packed.len() / t;
    let mut out = vec![0.0; rows * d * d];
    let failed: Vec<usize> = out
        .par_chunks_mut(d * d)
        .zip(packed.par_chunks(t))
        .enumerate()
        .with_min_len((4096 / (d * d)).max(16))
        .map_init(
            || {
                let scratch = cholesky_in_place_scratch::<f64>(d, Par::Seq, Spec::<LltParams, f64>::default());
                (Mat::<f64>::zeros(d, d), MemBuffer::new(scratch))
            },
            |(matrix, buffer), (row, (inverse, upper))| {
                let mut idx = 0;
                for i in 0..d {
                    for j in i..d {
                        matrix[(i, j)] = upper[idx];
                        matrix[(j, i)] = upper[idx];
                        idx += 1;
                    }
                    matrix[(i, i)] += ridge[i];
                }
                if factor(matrix, buffer, row, ridge).is_err() {
                    inverse.fill(f64::NAN);
                    return Some(row);
                }
                // Columns of the identity solved in place give the inverse, column-major;
                // it is symmetric, so that is also row-major.
                inverse.fill(0.0);
                (0..d).for_each(|i| inverse[i * d + i] = 1.0);
                let stack = MemStack::new(buffer);
                let identity = MatMut::from_column_major_slice_mut(inverse, d, d);
                solve_in_place(matrix.as_ref(), identity, Par::Seq, stack);
                None
            },
        )
        .flatten()
        .collect();
    (out, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_solve_matches_closed_form() {
        // [[4, 2], [2, 3]] + ridge 1 on both: [[5, 2], [2, 4]] x = [1 + 0.5, 2 + 0.5].
        let packed = vec![4.0, 2.0, 3.0];
        let mut rhs = vec![1.0, 2.0];
        solve_packed(&packed, &mut rhs, 2, &[1.0, 1.0], &[0.5, 0.5]).unwrap();
        let det = 5.0 * 4.0 - 4.0;
        let expected = [(4.0 * 1.5 - 2.0 * 2.5) / det, (5.0 * 2.5 - 2.0 * 1.5) / det];
        assert!((rhs[0] - expected[0]).abs() < 1e-14);
        assert!((rhs[1] - expected[1]).abs() < 1e-14);
    }

    #[test]
    fn packed_inverse_matches_closed_form() {
        // [[5, 2], [2, 4]]⁻¹ = [[4, −2], [−2, 5]] / 16; the second system is singular.
        let packed = vec![4.0, 2.0, 3.0, 1.0, 1.0, 1.0];
        let (inverse, failed) = invert_packed(&packed, 2, &[1.0, 1.0]);
        let expected = [4.0 / 16.0, -2.0 / 16.0, -2.0 / 16.0, 5.0 / 16.0];
        for (got, want) in inverse[..4].iter().zip(expected) {
            assert!((got - want).abs() < 1e-15, "{got} vs {want}");
        }
        assert!(failed.is_empty());
        let (inverse, failed) = invert_packed(&packed[3..], 2, &[0.0, 0.0]);
        assert_eq!(failed, [0usize]);
        assert!(inverse.iter().all(|x| x.is_nan()));
    }

    #[test]
    fn near_singular_system_reports_row() {
        // [[1, 1], [1, 1 + 1e-15]]: positive definite in exact arithmetic, singular to
        // working precision.
        let packed = vec![1.0, 1.0, 1.0 + 1e-15];
        let mut rhs = vec![1.0, 2.0];
        assert_eq!(solve_packed(&packed, &mut rhs, 2, &[0.0, 0.0], &[0.0, 0.0]), Err(0));
    }

    #[test]
    fn huge_weight_with_prior_solves() {
        // One weight of 1e15 on [1, 1] plus a unit prior: a pivot 1e-15 of its diagonal,
        // yet well posed. The solution of (1e15·[[1, 1], [1, 1]] + I) x = [0, 1] is
        // x = [−½, ½] to about 1e-15; rounding costs about cond · ε ≈ 0.1 of it.
        let packed = vec![1e15, 1e15, 1e15];
        let mut rhs = vec![0.0, 1.0];
        solve_packed(&packed, &mut rhs, 2, &[1.0, 1.0], &[0.0, 0.0]).unwrap();
        assert!((rhs[0] + 0.5).abs() < 0.2, "{rhs:?}");
        assert!((rhs[1] - 0.5).abs() < 0.2, "{rhs:?}");

        // Without the prior the same pivot means singular to working precision.
        let mut rhs = vec![0.0, 1.0];
        assert_eq!(solve_packed(&[1e15, 1e15, 1e15 + 1.0], &mut rhs, 2, &[0.0, 0.0], &[0.0, 0.0]), Err(0));
    }

    #[test]
    fn singular_system_reports_row() {
        let packed = vec![1.0, 0.0, 1.0, 1.0, 1.0, 1.0];
        let mut rhs = vec![1.0, 1.0, 1.0, 1.0];
        assert_eq!(solve_packed(&packed, &mut rhs, 2, &[0.0, 0.0], &[0.0, 0.0]), Err(1));
    }
}
