//! Coverage of a model by a data set: missing elements, objects and columns without data.

use std::fmt;

use crate::data::Dataset;
use crate::graph::Model;

/// Coverage of one output of the model by the data.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputCoverage {
    pub name: String,
    /// Elements in the data, N × P.
    pub n_elements: usize,
    /// Elements that are missing (weight zero).
    pub n_missing: usize,
    /// Objects without any observed element of this output.
    pub objects_without: Vec<usize>,
    /// Columns (output elements) that no object observes.
    pub empty_columns: Vec<usize>,
}

/// Coverage of a model's outputs by a data set, computed before fitting.
///
/// Objects and columns without any data are still defined by their priors when those
/// are proper; the engines reject a fit where they are not.
#[derive(Debug, Clone, PartialEq)]
pub struct Coverage {
    pub n_objects: usize,
    /// Outputs of the model present in the data, in model order.
    pub outputs: Vec<OutputCoverage>,
    /// Outputs of the model absent from the data.
    pub absent: Vec<String>,
    /// Objects without any observed element in any output.
    pub empty_objects: Vec<usize>,
}

impl Model {
    /// Counts what `data` leaves missing, per output of the model.
    pub fn coverage(&self, data: &Dataset) -> Coverage {
        let mut outputs = Vec::new();
        let mut absent = Vec::new();
        let mut observed_objects = vec![false; data.n_objects()];
        for obs in self.observes() {
            let Some(out) = data.output(&obs.name) else {
                absent.push(obs.name.clone());
                continue;
            };
            let ivar = out.ivar();
            let mut column_observed = vec![false; out.size()];
            let mut objects_without = Vec::new();
            for (n, row) in ivar.rows().into_iter().enumerate() {
                let mut any = false;
                for (p, &w) in row.iter().enumerate() {
                    if w > 0.0 {
                        any = true;
                        column_observed[p] = true;
                    }
                }
                if any {
                    observed_objects[n] = true;
                } else {
                    objects_without.push(n);
                }
            }
            outputs.push(OutputCoverage {
                name: obs.name.clone(),
                n_elements: ivar.len(),
                n_missing: ivar.len() - out.n_observed(),
                objects_without,
                empty_columns: (0..out.size()).filter(|&p| !column_observed[p]).collect(),
            });
        }
        Coverage {
            n_objects: data.n_objects(),
            outputs,
            absent,
            empty_objects: (0..data.n_objects()).filter(|&n| !observed_objects[n]).collect(),
        }
    }
}

impl Coverage {
    /// Returns the coverage of output `name`, if it is present in the data.
    pub fn output(&self, name: &str) -> Option<&OutputCoverage> {
        self.outputs.iter().find(|o| o.name == name)
    }

    /// Returns whether some object or column has no data at all.
    pub fn has_gaps(&self) -> bool {
        !self.empty_objects.is_empty() || self.outputs.iter().any(|o| !o.empty_columns.is_empty())
    }
}

/// Formats indices as `[3, 17, 40]`, shortened after the first ten.
pub fn list_indices(indices: &[usize]) -> String {
    const SHOWN: usize = 10;
    let shown: Vec<String> = indices.iter().take(SHOWN).map(ToString::to_string).collect();
    if indices.len() > SHOWN {
        format!("[{}, … {} more]", shown.join(", "), indices.len() - SHOWN)
    } else {
        format!("[{}]", shown.join(", "))
    }
}

impl fmt::Display for Coverage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} objects", self.n_objects)?;
        for out in &self.outputs {
            let percent = if out.n_elements == 0 {
                0.0
            } else {
                100.0 * out.n_missing as f64 / out.n_elements as f64
            };
            writeln!(
                f,
                "output `{}`: {} of {} elements missing ({percent:.2}%), {} objects without any, {} columns without any",
                out.name,
                out.n_missing,
                out.n_elements,
                out.objects_without.len(),
                out.empty_columns.len()
            )?;
            if !out.empty_columns.is_empty() {
                writeln!(
                    f,
                    "  columns without data, fitted from the prior alone: {}",
                    list_indices(&out.empty_columns)
                )?;
            }
        }
        for name in &self.absent {
            writeln!(f, "output `{name}`: absent from the data")?;
        }
        if !self.empty_objects.is_empty() {
            writeln!(
                f,
                "objects without any data, latents fitted from the prior alone: {}",
                list_indices(&self.empty_objects)
            )?;
        }
        Ok(())
    }
}
