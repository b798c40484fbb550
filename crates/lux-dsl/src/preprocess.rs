//! Per-column shift and scale of each output, and its inverse for predictions.
//!
//! The model is fitted in standardized space: every column `j` of an output is mapped to
//! `(v - shift_j) / scale_j`, and its errors are divided by `scale_j`. Predictions are
//! mapped back with [`ShiftScale::inverse_values`] and [`ShiftScale::inverse_errors`].

use std::collections::BTreeMap;

use ndarray::{Array1, Array2, ArrayView1, ArrayView2};

use crate::data::{Dataset, OutputData};
use crate::error::{ColumnProblem, DataError};

/// A scale below this fraction of the column's largest observed magnitude is too small
/// to divide by: the standardized values would be mostly rounding error.
const MIN_RELATIVE_SCALE: f64 = 1e-12;

/// Lower and upper percentiles whose half range is the robust scale.
const ROBUST_PERCENTILES: (f64, f64) = (16.0, 84.0);

/// Shift and scale of every column of every output it was fitted on.
#[derive(Debug, Clone, PartialEq)]
pub struct ShiftScale {
    outputs: BTreeMap<String, Columns>,
}

#[derive(Debug, Clone, PartialEq)]
struct Columns {
    shift: Array1<f64>,
    scale: Array1<f64>,
    /// Columns without any observed element, given shift 0 and scale 1.
    empty: Vec<usize>,
}

impl ShiftScale {
    /// Fits the mean and the population standard deviation (ddof = 0) of each column,
    /// over the observed elements (inverse variance > 0) of all rows.
    ///
    /// A column without any observed element gets shift 0 and scale 1 and is listed by
    /// [`ShiftScale::empty_columns`]; it stays missing after [`ShiftScale::transform`].
    /// Columns that are constant over their observed values, or whose scale is tiny
    /// next to their values, fail together in one [`DataError::DegenerateColumns`].
    pub fn fit(data: &Dataset) -> Result<Self, DataError> {
        Self::fit_with(data, false)
    }

    /// Fits the median and half the 16–84 percentile range of each column, over the
    /// observed elements; percentiles interpolate linearly between order statistics.
    ///
    /// Empty and degenerate columns are handled as in [`ShiftScale::fit`]. A column
    /// whose values mostly coincide has a zero percentile range and fails too.
    pub fn fit_robust(data: &Dataset) -> Result<Self, DataError> {
        Self::fit_with(data, true)
    }

    /// Builds a scaler from saved constants: per output, the shift and scale vectors.
    ///
    /// Both vectors of an output must have the same length, every shift must be finite
    /// and every scale finite and not tiny relative to its shift.
    pub fn from_parts(
        parts: BTreeMap<String, (Array1<f64>, Array1<f64>)>,
    ) -> Result<Self, DataError> {
        let mut outputs = BTreeMap::new();
        for (name, (shift, scale)) in parts {
            if shift.len() != scale.len() {
                return Err(DataError::Shape {
                    output: name,
                    what: "scale",
                    found: vec![scale.len()],
                    expected: vec![shift.len()],
                    hint: "shift and scale need one entry per column",
                });
            }
            let mut problems = Vec::new();
            for (column, (&s, &c)) in shift.iter().zip(&scale).enumerate() {
                check_finite(&name, column, s, c)?;
                if let Some(problem) = scale_problem(column, c, s.abs()) {
                    problems.push(problem);
                }
            }
            if !problems.is_empty() {
                return Err(DataError::DegenerateColumns { output: name, problems });
            }
            outputs.insert(
                name,
                Columns {
                    shift,
                    scale,
                    empty: Vec::new(),
                },
            );
        }
        Ok(Self { outputs })
    }

    /// Names of the outputs the scaler was fitted on, in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.outputs.keys().map(String::as_str)
    }

    /// Per-column shift of `output`, if the scaler was fitted on it.
    pub fn shift(&self, output: &str) -> Option<ArrayView1<'_, f64>> {
        self.outputs.get(output).map(|c| c.shift.view())
    }

    /// Columns of `output` that had no observed element when the scaler was fitted.
    pub fn empty_columns(&self, output: &str) -> Option<&[usize]> {
        self.outputs.get(output).map(|c| c.empty.as_slice())
    }

    /// Per-column scale of `output`, if the scaler was fitted on it.
    pub fn scale(&self, output: &str) -> Option<ArrayView1<'_, f64>> {
        self.outputs.get(output).map(|c| c.scale.view())
    }

    /// Standardizes every output of `data`: values become `(v - shift) / scale` and
    /// inverse variances `ivar · scale²`; missing elements stay missing.
    ///
    /// Every output of `data` must be one the scaler was fitted on. Outputs the scaler has
    /// but `data` lacks are allowed (a test set with flux only).
    pub fn transform(&self, data: &Dataset) -> Result<Dataset, DataError> {
        let mut out = Dataset::new();
        for (name, output) in data.outputs() {
            let columns = self.columns(name)?;
            columns.check_width(name, "values", output.values().dim())?;

            let values = (output.values() - &columns.shift) / &columns.scale;
            let ivar = output.ivar() * &columns.scale.mapv(|s| s * s);
            out = out.with_output(name, OutputData::from_ivar(name, values, ivar.view())?)?;
        }
        Ok(out)
    }

    /// Maps standardized values of `output` (N×P, for example predictions) back to the
    /// original units: `v · scale + shift`.
    pub fn inverse_values(
        &self,
        output: &str,
        values: ArrayView2<f64>,
    ) -> Result<Array2<f64>, DataError> {
        let columns = self.columns(output)?;
        columns.check_width(output, "values", values.dim())?;
        Ok(&values * &columns.scale + &columns.shift)
    }

    /// Maps every prediction of [`Model::predict`](crate::Model::predict) back to the
    /// original units.
    pub fn inverse_predictions(
        &self,
        predictions: &BTreeMap<String, Array2<f64>>,
    ) -> Result<BTreeMap<String, Array2<f64>>, DataError> {
        predictions
            .iter()
            .map(|(name, values)| Ok((name.clone(), self.inverse_values(name, values.view())?)))
            .collect()
    }

    /// Maps standardized 1-sigma errors of `output` (N×P) back to the original units:
    /// `e · scale`.
    pub fn inverse_errors(
        &self,
        output: &str,
        errors: ArrayView2<f64>,
    ) -> Result<Array2<f64>, DataError> {
        let columns = self.columns(output)?;
        columns.check_width(output, "errors", errors.dim())?;
        Ok(&errors * &columns.scale)
    }

    fn fit_with(data: &Dataset, robust: bool) -> Result<Self, DataError> {
        let statistic = if robust { median_half_range } else { mean_std };
        let mut outputs = BTreeMap::new();
        let mut observed = Vec::with_capacity(data.n_objects());
        for (name, output) in data.outputs() {
            let mut shift = Array1::zeros(output.size());
            let mut scale = Array1::ones(output.size());
            let mut empty = Vec::new();
            let mut problems = Vec::new();
            for column in 0..output.size() {
                observed.clear();
                let values = output.values().column(column);
                let ivar = output.ivar().column(column);
                observed.extend(
                    values
                        .iter()
                        .zip(ivar)
                        .filter(|&(_, &w)| w > 0.0)
                        .map(|(&v, _)| v),
                );
                let Some(&first) = observed.first() else {
                    empty.push(column);
                    continue;
                };

                // Constant means every value is equal, tested exactly: a spread of
                // rounding size is caught by the relative-scale test below instead.
                if observed.iter().all(|&v| v == first) {
                    problems.push(ColumnProblem::Constant { column, value: first });
                    continue;
                }
                let magnitude = observed.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                let (s, c) = statistic(&mut observed);
                check_finite(name, column, s, c)?;
                if robust && c == 0.0 {
                    problems.push(ColumnProblem::ZeroPercentileRange { column, value: s });
                    continue;
                }
                if let Some(problem) = scale_problem(column, c, magnitude) {
                    problems.push(problem);
                    continue;
                }
                shift[column] = s;
                scale[column] = c;
            }
            if !problems.is_empty() {
                return Err(DataError::DegenerateColumns {
                    output: name.to_string(),
                    problems,
                });
            }
            outputs.insert(name.to_string(), Columns { shift, scale, empty });
        }
        Ok(Self { outputs })
    }

    fn columns(&self, output: &str) -> Result<&Columns, DataError> {
        self.outputs
            .get(output)
            .ok_or_else(|| DataError::UnknownOutput {
                name: output.to_string(),
                fitted: if self.outputs.is_empty() {
                    "no outputs".to_string()
                } else {
                    self.names().collect::<Vec<_>>().join(", ")
                },
            })
    }
}

impl Columns {
    fn check_width(
        &self,
        output: &str,
        array: &'static str,
        (rows, cols): (usize, usize),
    ) -> Result<(), DataError> {
        if cols != self.shift.len() {
            return Err(DataError::Shape {
                output: output.to_string(),
                what: array,
                found: vec![rows, cols],
                expected: vec![rows, self.shift.len()],
                hint: "the scaler was fitted on a different number of columns",
            });
        }
        Ok(())
    }
}

fn check_finite(output: &str, column: usize, shift: f64, scale: f64) -> Result<(), DataError> {
    if !shift.is_finite() || !scale.is_finite() || scale < 0.0 {
        return Err(DataError::BadShiftScale {
            output: output.to_string(),
            column,
            shift,
            scale,
        });
    }
    Ok(())
}

/// Returns the problem with dividing a column by `scale` when its values reach
/// `magnitude`: a scale of zero, or one too small relative to the values.
fn scale_problem(column: usize, scale: f64, magnitude: f64) -> Option<ColumnProblem> {
    (scale == 0.0 || scale < MIN_RELATIVE_SCALE * magnitude).then_some(ColumnProblem::TinyScale {
        column,
        scale,
        magnitude,
    })
}

/// Computes the mean and population standard deviation, with compensated sums to limit
/// rounding error.
fn mean_std(values: &mut [f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = compensated_sum(values.iter().copied()) / n;

    let residual = compensated_sum(values.iter().map(|&v| v - mean));
    let squares = compensated_sum(values.iter().map(|&v| (v - mean) * (v - mean)));
    let variance = ((squares - residual * residual / n) / n).max(0.0);
    (mean, variance.sqrt())
}

/// Neumaier's compensated summation.
fn compensated_sum(values: impl Iterator<Item = f64>) -> f64 {
    let mut sum = 0.0_f64;
    let mut carry = 0.0_f64;
    for v in values {
        let t = sum + v;
        carry += if sum.abs() >= v.abs() {
            (sum - t) + v
        } else {
            (v - t) + sum
        };
        sum = t;
    }
    sum + carry
}

/// Median and half the distance between the robust percentiles.
fn median_half_range(values: &mut [f64]) -> (f64, f64) {
    values.sort_unstable_by(f64::total_cmp);
    let (low, high) = ROBUST_PERCENTILES;
    let half_range = 0.5 * (percentile(values, high) - percentile(values, low));
    (percentile(values, 50.0), half_range)
}

/// Percentile `q` (0..=100) of sorted values, interpolating linearly between order
/// statistics at position `q/100 · (n - 1)`.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let position = q / 100.0 * (sorted.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = (below + 1).min(sorted.len() - 1);
    let fraction = position - below as f64;
    sorted[below] + fraction * (sorted[above] - sorted[below])
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-14 * b.abs().max(1.0)
    }

    fn dataset(name: &str, values: Array2<f64>, errors: Array2<f64>) -> Dataset {
        Dataset::new().with_errors(name, values, errors).unwrap()
    }

    #[test]
    fn fit_mean_std_closed_form() {
        let values = array![[1.0, 10.0], [2.0, 10.0], [3.0, 10.0], [4.0, 14.0]];
        let scaler = ShiftScale::fit(&dataset("label", values, Array2::ones((4, 2)))).unwrap();
        let shift = scaler.shift("label").unwrap();
        let scale = scaler.scale("label").unwrap();

        assert!(close(shift[0], 2.5), "{shift}");
        assert!(close(shift[1], 11.0), "{shift}");
        assert!(close(scale[0], 1.25_f64.sqrt()), "{scale}");
        assert!(close(scale[1], 3.0_f64.sqrt()), "{scale}");
    }

    #[test]
    fn fit_ignores_missing() {
        let values = array![[1.0], [100.0], [3.0], [f64::NAN]];
        let errors = array![[1.0], [0.0], [1.0], [1.0]];
        let scaler = ShiftScale::fit(&dataset("flux", values, errors)).unwrap();

        assert!(close(scaler.shift("flux").unwrap()[0], 2.0));
        assert!(close(scaler.scale("flux").unwrap()[0], 1.0));
    }

    #[test]
    fn fit_robust_percentiles() {
        let column = Array1::from_iter((0..=100).rev().map(f64::from));
        let values = column.insert_axis(ndarray::Axis(1));
        let scaler =
            ShiftScale::fit_robust(&dataset("label", values, Array2::ones((101, 1)))).unwrap();

        assert!(close(scaler.shift("label").unwrap()[0], 50.0));
        assert!(close(scaler.scale("label").unwrap()[0], 34.0));
    }

    /// Returns the columns a degenerate-column error lists for `output`.
    fn degenerate(err: &DataError, output: &str) -> Vec<usize> {
        match err {
            DataError::DegenerateColumns { output: name, problems } if name == output => {
                problems.iter().map(ColumnProblem::column).collect()
            }
            other => panic!("expected degenerate columns of `{output}`, got {other:?}"),
        }
    }

    #[test]
    fn fit_constant_columns_listed() {
        let values = array![[1.0, 5.0, 0.0, 2.0], [2.0, 5.0, 0.0, 3.0], [4.0, 5.0, 0.0, 2.5]];
        let err = ShiftScale::fit(&dataset("flux", values, Array2::ones((3, 4)))).unwrap_err();
        assert_eq!(degenerate(&err, "flux"), [1, 2]);
        let message = err.to_string();
        assert!(message.contains("column 1 is constant (every observed value is 5)"), "{message}");
        assert!(message.contains("column 2 is constant (every observed value is 0)"), "{message}");
    }

    #[test]
    fn fit_tiny_scale_rejected() {
        // A spread of one unit in the last place of 1e8 is real but too small to divide by.
        let step = 2.0_f64.powi(-26);
        let values = array![[1e8], [1e8 + step]];
        let err = ShiftScale::fit(&dataset("flux", values, Array2::ones((2, 1)))).unwrap_err();
        assert_eq!(degenerate(&err, "flux"), [0]);

        // Small values with a proportionate spread are fine.
        let values = array![[1e-20], [2e-20], [3e-20]];
        let scaler = ShiftScale::fit(&dataset("flux", values, Array2::ones((3, 1)))).unwrap();
        assert!(close(scaler.shift("flux").unwrap()[0] * 1e20, 2.0));
    }

    #[test]
    fn fit_robust_zero_range_rejected() {
        // Column 0 varies in 3 of 20 rows only: its 16–84 percentile range is zero. Its
        // standard deviation is not, so the plain fit accepts it.
        let mut values = Array2::from_elem((20, 2), 1.0);
        values[[0, 0]] = 2.0;
        values[[4, 0]] = -3.0;
        values[[9, 0]] = 7.0;
        for row in 0..20 {
            values[[row, 1]] = row as f64;
        }
        let data = dataset("flux", values, Array2::ones((20, 2)));
        let err = ShiftScale::fit_robust(&data).unwrap_err();
        assert_eq!(degenerate(&err, "flux"), [0]);
        assert!(err.to_string().contains("16th and 84th percentiles are both 1"), "{err}");
        assert!(ShiftScale::fit(&data).is_ok());
    }

    #[test]
    fn fit_empty_column_passes_through() {
        let values = array![[1.0, 5.0], [2.0, 6.0]];
        let errors = array![[1.0, 0.0], [1.0, f64::INFINITY]];
        let data = dataset("flux", values, errors);
        let scaler = ShiftScale::fit(&data).unwrap();
        assert_eq!(scaler.empty_columns("flux").unwrap(), [1]);
        assert_eq!(scaler.shift("flux").unwrap()[1], 0.0);
        assert_eq!(scaler.scale("flux").unwrap()[1], 1.0);

        let out = scaler.transform(&data).unwrap();
        assert!(out.require("flux").unwrap().ivar().column(1).iter().all(|&w| w == 0.0));
    }

    #[test]
    fn transform_scales_errors() {
        let values = array![[1.0, 10.0], [3.0, 30.0], [5.0, 20.0]];
        let errors = array![[0.5, 2.0], [0.25, 0.0], [1.0, 4.0]];
        let scaler = ShiftScale::from_parts(BTreeMap::from([(
            "flux".to_string(),
            (array![3.0, 20.0], array![2.0, 10.0]),
        )]))
        .unwrap();
        let out = scaler.transform(&dataset("flux", values, errors)).unwrap();
        let flux = out.require("flux").unwrap();

        assert_eq!(flux.values(), &array![[-1.0, -1.0], [0.0, 0.0], [1.0, 0.0]]);
        assert_eq!(
            flux.errors(),
            array![[0.25, 0.2], [0.125, f64::INFINITY], [0.5, 0.4]]
        );
        assert_eq!(flux.ivar()[[1, 1]], 0.0);

        let back = scaler.inverse_errors("flux", flux.errors().view()).unwrap();
        assert_eq!(back, array![[0.5, 2.0], [0.25, f64::INFINITY], [1.0, 4.0]]);
        let back = scaler.inverse_values("flux", flux.values().view()).unwrap();
        assert_eq!(back.row(2), array![5.0, 20.0]);
    }

    #[test]
    fn transform_unknown_output_named() {
        let label = ShiftScale::fit(&dataset(
            "label",
            array![[1.0], [2.0]],
            Array2::ones((2, 1)),
        ))
        .unwrap();
        let data = dataset("flux", array![[1.0], [2.0]], Array2::ones((2, 1)));
        let err = label.transform(&data).unwrap_err();
        assert!(
            matches!(err, DataError::UnknownOutput { ref name, .. } if name == "flux"),
            "{err}"
        );

        let both = ShiftScale::fit(
            &data
                .clone()
                .with_errors("label", array![[1.0], [2.0]], Array2::ones((2, 1)))
                .unwrap(),
        )
        .unwrap();
        let flux_only = both.transform(&data).unwrap();
        assert_eq!(flux_only.names().collect::<Vec<_>>(), ["flux"]);
    }

    #[test]
    fn transform_width_checked() {
        let scaler = ShiftScale::fit(&dataset(
            "flux",
            array![[1.0, 2.0], [2.0, 4.0]],
            Array2::ones((2, 2)),
        ))
        .unwrap();
        let err = scaler
            .transform(&dataset("flux", array![[1.0], [2.0]], Array2::ones((2, 1))))
            .unwrap_err();
        assert!(matches!(err, DataError::Shape { .. }), "{err}");
        assert!(
            scaler
                .inverse_values("flux", Array2::zeros((1, 3)).view())
                .is_err()
        );
    }

    #[test]
    fn from_parts_validates() {
        let parts = |shift: Array1<f64>, scale: Array1<f64>| {
            BTreeMap::from([("x".to_string(), (shift, scale))])
        };
        assert!(matches!(
            ShiftScale::from_parts(parts(array![0.0, 1.0], array![1.0])),
            Err(DataError::Shape { .. })
        ));
        assert!(matches!(
            ShiftScale::from_parts(parts(array![0.0], array![0.0])),
            Err(DataError::DegenerateColumns { .. })
        ));
        assert!(matches!(
            ShiftScale::from_parts(parts(array![f64::NAN], array![1.0])),
            Err(DataError::BadShiftScale { .. })
        ));
    }
}
