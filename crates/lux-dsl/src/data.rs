//! Data sets: named outputs, each an N×P array of measurements with inverse variances.

use std::collections::BTreeMap;

use ndarray::{Array2, ArrayView2, Axis};

use crate::error::DataError;

/// Measurements of one output (for example `flux` or `label`) for every object.
///
/// Values are stored cleaned: a missing measurement has value 0 and inverse variance 0,
/// so it can be multiplied without producing NaN and contributes nothing to any sum.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputData {
    values: Array2<f64>,
    ivar: Array2<f64>,
    /// Number of observed elements, cached because every loss evaluation needs it.
    n_observed: usize,
    /// Σ ln w over observed elements, cached for the same reason.
    log_ivar_sum: f64,
}

impl OutputData {
    /// Builds an output from values and 1-sigma errors of the same shape.
    ///
    /// An element is missing when its value is not finite or its error is not finite
    /// and positive. An error below about 1e-154, whose 1/σ² overflows, is missing too,
    /// as an infinite inverse variance is in [`OutputData::from_ivar`].
    pub fn from_errors(
        name: &str,
        values: Array2<f64>,
        errors: ArrayView2<f64>,
    ) -> Result<Self, DataError> {
        check_same_shape(name, "errors", &values, errors)?;
        check_some_error_usable(name, &values, errors.iter().map(|&e| if e.is_finite() { e } else { f64::NAN }))?;
        let ivar = errors.mapv(|e| {
            let w = 1.0 / (e * e);
            if e.is_finite() && e > 0.0 && w.is_finite() && w > 0.0 {
                w
            } else {
                0.0
            }
        });
        Self::cleaned(name, values, ivar)
    }

    /// Builds an output from values and inverse variances (1/σ², 0 meaning missing).
    ///
    /// An element is missing when its value is not finite or its inverse variance is
    /// not finite and positive.
    pub fn from_ivar(
        name: &str,
        values: Array2<f64>,
        ivar: ArrayView2<f64>,
    ) -> Result<Self, DataError> {
        check_same_shape(name, "inverse variances", &values, ivar)?;
        // An inverse variance w stands for the error 1/√w: 0 for an infinite error, +∞
        // for a zero one.
        let as_error = |&w: &f64| match w {
            w if w == f64::INFINITY => 0.0,
            w if w.is_finite() && w > 0.0 => w.sqrt().recip(),
            w if w < 0.0 => -1.0,
            _ => f64::NAN,
        };
        check_some_error_usable(name, &values, ivar.iter().map(as_error))?;
        let ivar = ivar.mapv(|w| if w.is_finite() && w > 0.0 { w } else { 0.0 });
        Self::cleaned(name, values, ivar)
    }

    /// Zeroes the missing elements and rejects an observed element whose squared
    /// standardized value `y² w` overflows: its loss term could never be finite.
    fn cleaned(name: &str, mut values: Array2<f64>, mut ivar: Array2<f64>) -> Result<Self, DataError> {
        ndarray::Zip::from(&mut values)
            .and(&mut ivar)
            .for_each(|v, w| {
                if !v.is_finite() || *w == 0.0 {
                    *v = 0.0;
                    *w = 0.0;
                }
            });
        let overflow = ndarray::Zip::indexed(&values)
            .and(&ivar)
            .fold(None, |found, (n, p), &v, &w| {
                found.or_else(|| (!(v * v * w).is_finite()).then_some((n, p, v, w)))
            });
        if let Some((n, p, value, ivar)) = overflow {
            return Err(DataError::ExtremeValue {
                output: name.to_string(),
                element: [n, p],
                value,
                ivar,
            });
        }
        Ok(Self::summarized(
            values.as_standard_layout().into_owned(),
            ivar.as_standard_layout().into_owned(),
        ))
    }

    fn summarized(values: Array2<f64>, ivar: Array2<f64>) -> Self {
        let observed = ivar.iter().filter(|&&w| w > 0.0);
        let n_observed = observed.clone().count();
        let log_ivar_sum = observed.map(|w| w.ln()).sum();
        Self {
            values,
            ivar,
            n_observed,
            log_ivar_sum,
        }
    }

    /// Measured values, N×P; missing elements are 0.
    pub fn values(&self) -> &Array2<f64> {
        &self.values
    }

    /// Inverse variances 1/σ², N×P; 0 marks a missing element.
    pub fn ivar(&self) -> &Array2<f64> {
        &self.ivar
    }

    /// 1-sigma errors, N×P; missing elements are infinite.
    pub fn errors(&self) -> Array2<f64> {
        self.ivar.mapv(|w| if w > 0.0 { w.sqrt().recip() } else { f64::INFINITY })
    }

    /// Number of objects (rows).
    pub fn n_objects(&self) -> usize {
        self.values.nrows()
    }

    /// Number of elements per object (columns), P.
    pub fn size(&self) -> usize {
        self.values.ncols()
    }

    /// Number of observed (not missing) elements.
    pub fn n_observed(&self) -> usize {
        self.n_observed
    }

    /// Σ ln(1/σ²) over the observed elements.
    pub fn log_ivar_sum(&self) -> f64 {
        self.log_ivar_sum
    }

    /// Returns whether object `row` has at least one observed element.
    pub fn row_observed(&self, row: usize) -> bool {
        self.ivar.row(row).iter().any(|&w| w > 0.0)
    }

    fn select(&self, rows: &[usize]) -> Self {
        Self::summarized(self.values.select(Axis(0), rows), self.ivar.select(Axis(0), rows))
    }
}

/// Rejects an output whose values are measured but whose errors are all unusable (a
/// column of zeros where errors were not known, say): fitting it would silently drop
/// the whole output. An output whose values are all missing is allowed.
///
/// `errors` yields each element's error, NaN for a non-finite one.
fn check_some_error_usable(name: &str, values: &Array2<f64>, errors: impl Iterator<Item = f64>) -> Result<(), DataError> {
    let (mut finite_values, mut usable, mut zero, mut negative, mut non_finite) = (0, 0, 0, 0, 0);
    for (&v, e) in values.iter().zip(errors) {
        if !v.is_finite() {
            continue;
        }
        finite_values += 1;
        if e.is_nan() {
            non_finite += 1;
        } else if e == 0.0 {
            zero += 1;
        } else if e < 0.0 {
            negative += 1;
        } else {
            usable += 1;
        }
    }
    if finite_values > 0 && usable == 0 {
        return Err(DataError::NoUsableErrors {
            output: name.to_string(),
            finite_values,
            zero,
            negative,
            non_finite,
        });
    }
    Ok(())
}

fn check_same_shape(
    name: &str,
    what: &'static str,
    values: &Array2<f64>,
    other: ArrayView2<f64>,
) -> Result<(), DataError> {
    if values.dim() != other.dim() {
        return Err(DataError::Shape {
            output: name.to_string(),
            what,
            found: other.shape().to_vec(),
            expected: values.shape().to_vec(),
            hint: "values and their errors must have the same shape",
        });
    }
    Ok(())
}

/// Named outputs measured on the same N objects.
///
/// An output that is absent from the data set (a test set with flux only) is simply not
/// a term of the likelihood. An object that lacks an output has inverse variance 0 on
/// that output's whole row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dataset {
    n_objects: Option<usize>,
    outputs: BTreeMap<String, OutputData>,
}

impl Dataset {
    /// Creates an empty data set; the first output added fixes the number of objects.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an output given values and 1-sigma errors (both N×P).
    pub fn with_errors(
        self,
        name: &str,
        values: Array2<f64>,
        errors: Array2<f64>,
    ) -> Result<Self, DataError> {
        let output = OutputData::from_errors(name, values, errors.view())?;
        self.with_output(name, output)
    }

    /// Adds an output given values and inverse variances (both N×P, 0 meaning missing).
    pub fn with_ivar(
        self,
        name: &str,
        values: Array2<f64>,
        ivar: Array2<f64>,
    ) -> Result<Self, DataError> {
        let output = OutputData::from_ivar(name, values, ivar.view())?;
        self.with_output(name, output)
    }

    /// Adds an already built output.
    pub fn with_output(mut self, name: &str, output: OutputData) -> Result<Self, DataError> {
        if self.outputs.contains_key(name) {
            return Err(DataError::DuplicateOutput {
                name: name.to_string(),
            });
        }
        match self.n_objects {
            Some(n) if n != output.n_objects() => {
                return Err(DataError::ObjectCount {
                    output: name.to_string(),
                    found: output.n_objects(),
                    expected: n,
                });
            }
            _ => self.n_objects = Some(output.n_objects()),
        }
        self.outputs.insert(name.to_string(), output);
        Ok(self)
    }

    /// Number of objects; 0 for a data set without outputs.
    pub fn n_objects(&self) -> usize {
        self.n_objects.unwrap_or(0)
    }

    /// Returns the output called `name`, if the data set has it.
    pub fn output(&self, name: &str) -> Option<&OutputData> {
        self.outputs.get(name)
    }

    /// Returns the output called `name`, or an error listing the outputs that exist.
    pub fn require(&self, name: &str) -> Result<&OutputData, DataError> {
        self.outputs.get(name).ok_or_else(|| DataError::MissingOutput {
            name: name.to_string(),
            available: self.available(),
        })
    }

    /// Output names in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.outputs.keys().map(String::as_str)
    }

    /// Outputs by name, in sorted order.
    pub fn outputs(&self) -> impl Iterator<Item = (&str, &OutputData)> {
        self.outputs.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Total number of observed elements over all outputs.
    pub fn n_observed(&self) -> usize {
        self.outputs.values().map(OutputData::n_observed).sum()
    }

    /// Selects the objects at `rows`, in that order (rows may repeat).
    pub fn select_rows(&self, rows: &[usize]) -> Result<Self, DataError> {
        let n = self.n_objects();
        if let Some(&index) = rows.iter().find(|&&r| r >= n) {
            return Err(DataError::RowOutOfRange {
                index,
                n_objects: n,
            });
        }
        Ok(Self {
            n_objects: Some(rows.len()),
            outputs: self
                .outputs
                .iter()
                .map(|(k, v)| (k.clone(), v.select(rows)))
                .collect(),
        })
    }

    /// Splits into the first `n` objects and the rest.
    pub fn split_at(&self, n: usize) -> Result<(Self, Self), DataError> {
        let total = self.n_objects();
        if n > total {
            return Err(DataError::RowOutOfRange {
                index: n,
                n_objects: total,
            });
        }
        let head: Vec<usize> = (0..n).collect();
        let tail: Vec<usize> = (n..total).collect();
        Ok((self.select_rows(&head)?, self.select_rows(&tail)?))
    }

    /// Keeps only the named outputs (for example a test set with flux alone).
    pub fn with_only(&self, names: &[&str]) -> Result<Self, DataError> {
        let mut outputs = BTreeMap::new();
        for &name in names {
            outputs.insert(name.to_string(), self.require(name)?.clone());
        }
        Ok(Self {
            n_objects: self.n_objects,
            outputs,
        })
    }

    /// Drops the named output and keeps the others.
    pub fn without(&self, name: &str) -> Result<Self, DataError> {
        self.require(name)?;
        let mut out = self.clone();
        out.outputs.remove(name);
        Ok(out)
    }

    fn available(&self) -> String {
        if self.outputs.is_empty() {
            "no outputs".to_string()
        } else {
            self.names().collect::<Vec<_>>().join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn missing_elements_are_cleaned() {
        let values = array![[1.0, f64::NAN], [3.0, 4.0]];
        let errors = array![[0.5, 1.0], [0.0, f64::INFINITY]];
        let out = OutputData::from_errors("flux", values, errors.view()).unwrap();
        assert_eq!(out.values(), &array![[1.0, 0.0], [0.0, 0.0]]);
        assert_eq!(out.ivar(), &array![[4.0, 0.0], [0.0, 0.0]]);
        assert_eq!(out.n_observed(), 1);
        assert!(!out.row_observed(1));
    }

    #[test]
    fn errors_and_ivar_agree() {
        let values = array![[1.0, 2.0]];
        let a = OutputData::from_errors("x", values.clone(), array![[0.5, 2.0]].view()).unwrap();
        let b = OutputData::from_ivar("x", values, array![[4.0, 0.25]].view()).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn shape_mismatch_names_output() {
        let err = Dataset::new()
            .with_errors("flux", Array2::zeros((3, 4)), Array2::ones((3, 5)))
            .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("flux"), "{message}");
        assert!(message.contains("[3, 5]"), "{message}");
        assert!(message.contains("[3, 4]"), "{message}");
    }

    #[test]
    fn object_count_mismatch_names_both_sizes() {
        let err = Dataset::new()
            .with_errors("label", Array2::zeros((3, 2)), Array2::ones((3, 2)))
            .unwrap()
            .with_errors("flux", Array2::zeros((4, 5)), Array2::ones((4, 5)))
            .unwrap_err();
        assert!(matches!(
            err,
            DataError::ObjectCount { found: 4, expected: 3, .. }
        ));
    }

    #[test]
    fn split_and_subset() {
        let data = Dataset::new()
            .with_errors("label", array![[1.0], [2.0], [3.0]], Array2::ones((3, 1)))
            .unwrap()
            .with_errors("flux", array![[4.0], [5.0], [6.0]], Array2::ones((3, 1)))
            .unwrap();
        let (train, test) = data.split_at(2).unwrap();
        assert_eq!(train.n_objects(), 2);
        assert_eq!(test.require("flux").unwrap().values(), &array![[6.0]]);
        let flux_only = test.with_only(&["flux"]).unwrap();
        assert!(flux_only.output("label").is_none());
        assert!(data.select_rows(&[3]).is_err());
    }
}
