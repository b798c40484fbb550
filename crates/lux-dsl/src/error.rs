//! Error types of the model graph and of data handling.

use thiserror::Error;

/// A mistake in a model declaration, found while the graph is built.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum GraphError {
    #[error("duplicate name `{name}`: every latent, parameter and output needs its own name")]
    DuplicateName { name: String },

    #[error("unknown name `{name}`: declare it before using it")]
    UnknownName { name: String },

    #[error("size of `{name}` is zero: every dimension must be at least 1")]
    ZeroSize { name: String },

    #[error(
        "shape mismatch in `{context}`: {left_what} has size {left}, but {right_what} has size {right}"
    )]
    ShapeMismatch {
        context: String,
        left_what: String,
        left: usize,
        right_what: String,
        right: usize,
    },

    #[error("invalid prior on `{name}`: {reason}")]
    InvalidPrior { name: String, reason: String },

    #[error("slice {start}..{end} of `{context}` is out of range for a vector of size {size}")]
    SliceOutOfRange {
        context: String,
        start: usize,
        end: usize,
        size: usize,
    },

    #[error("invalid expression in `{context}`: {reason}")]
    InvalidExpression { context: String, reason: String },

    #[error("the model has no {what}: declare at least one")]
    Empty { what: &'static str },

    #[error("latent `{name}` feeds no observed output, so the data say nothing about it")]
    UnusedLatent { name: String },
}

/// A problem with data, parameters or their shapes at run time.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DataError {
    #[error(
        "output `{output}`: {what} has shape {found:?}, expected {expected:?}; {hint}"
    )]
    Shape {
        output: String,
        what: &'static str,
        found: Vec<usize>,
        expected: Vec<usize>,
        hint: &'static str,
    },

    #[error(
        "output `{output}` has {found} objects but the data set has {expected}; every output needs one row per object"
    )]
    ObjectCount {
        output: String,
        found: usize,
        expected: usize,
    },

    #[error(
        "output `{output}`: element {element:?} has value {value:e} with inverse variance {ivar:e}, so its squared residual overflows; rescale the output before building the data set, or mask the element"
    )]
    ExtremeValue {
        output: String,
        element: [usize; 2],
        value: f64,
        ivar: f64,
    },

    #[error("output `{name}` is not in the data set (it has: {available})")]
    MissingOutput { name: String, available: String },

    #[error(
        "parameter `{name}` has shape {found:?} but the model declares {expected:?}; {hint}"
    )]
    ParamShape {
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
        hint: String,
    },

    #[error("parameter `{name}` is missing from the parameter set")]
    MissingParameter { name: String },

    #[error("the data set is empty: {what}")]
    Empty { what: String },

    #[error("row index {index} is out of range for a data set of {n_objects} objects")]
    RowOutOfRange { index: usize, n_objects: usize },

    #[error("duplicate output `{name}` in the data set")]
    DuplicateOutput { name: String },

    #[error(
        "output `{output}`: {} column(s) cannot be standardized: {}; drop or mask these columns",
        problems.len(),
        list_problems(problems)
    )]
    DegenerateColumns {
        output: String,
        problems: Vec<ColumnProblem>,
    },

    #[error(
        "output `{output}` has {finite_values} finite values but no usable error: of its errors {zero} are zero, {negative} negative and {non_finite} non-finite (an inverse variance of 0 counts as an infinite error); give 1-sigma errors > 0, or leave the output out of the data set if it was not measured"
    )]
    NoUsableErrors {
        output: String,
        finite_values: usize,
        zero: usize,
        negative: usize,
        non_finite: usize,
    },

    #[error(
        "{} objects have no measurement at all (rows {}) and `{latent}` has a flat prior, so their latents are undefined; drop those rows or give the latents a Normal prior",
        rows.len(),
        crate::coverage::list_indices(rows)
    )]
    UnconstrainedObjects { latent: String, rows: Vec<usize> },

    #[error(
        "output `{output}`: {} columns are observed by no object (columns {}) and `{param}` has a flat prior, so its rows for them are undefined; drop those columns or give `{param}` a Normal prior",
        columns.len(),
        crate::coverage::list_indices(columns)
    )]
    UnconstrainedColumns {
        output: String,
        param: String,
        columns: Vec<usize>,
    },

    #[error(
        "`{name}` has the non-finite value {value} at element {element:?}; parameters and latents must be finite (replace it, or refit if a fit produced it)"
    )]
    NonFiniteParameter {
        name: String,
        /// Row-major position of the element.
        index: usize,
        /// The element's multi-index.
        element: Vec<usize>,
        value: f64,
    },

    #[error(
        "`{name}` has the value {value} at element {element:?}, outside the support of its HalfNormal prior; start it at a value ≥ 0"
    )]
    NegativeParameter {
        name: String,
        element: Vec<usize>,
        value: f64,
    },

    #[error("the latents have shape {found:?}, expected {expected:?}; {hint}")]
    LatentShape {
        found: Vec<usize>,
        expected: Vec<usize>,
        hint: String,
    },

    #[error(
        "output `{name}` has no shift and scale (the scaler was fitted on: {fitted}); fit the scaler on data that include it"
    )]
    UnknownOutput { name: String, fitted: String },

    #[error(
        "data output `{name}` is not an output of the model (it observes: {outputs}); rename it, or drop it with `Dataset::with_only`"
    )]
    NotAnOutput { name: String, outputs: String },

    #[error(
        "output `{output}`: column {column} has shift {shift} and scale {scale}; both must be finite and the scale positive"
    )]
    BadShiftScale {
        output: String,
        column: usize,
        shift: f64,
        scale: f64,
    },

    #[error(
        "array `{name}` in `{path}` has {} dimension(s) (shape {found:?}), expected {expected}",
        found.len()
    )]
    ArrayDims {
        path: String,
        name: String,
        found: Vec<usize>,
        expected: usize,
    },

    #[error("failed to read or write `{path}`: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("failed to read or write array `{name}` in `{path}`: {message}")]
    Npy {
        path: String,
        name: String,
        message: String,
    },
}

/// Reason one column of an output cannot be shifted and scaled.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnProblem {
    /// Every observed value is exactly `value`.
    Constant { column: usize, value: f64 },
    /// The robust scale is zero: the lower and upper percentiles are both `value`,
    /// because most observed values are equal.
    ZeroPercentileRange { column: usize, value: f64 },
    /// The scale is zero or below 1e-12 of the largest observed magnitude, so
    /// dividing by it amplifies rounding error.
    TinyScale { column: usize, scale: f64, magnitude: f64 },
}

impl ColumnProblem {
    /// Returns the column index.
    pub fn column(&self) -> usize {
        match *self {
            Self::Constant { column, .. } | Self::ZeroPercentileRange { column, .. } | Self::TinyScale { column, .. } => column,
        }
    }
}

impl std::fmt::Display for ColumnProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::Constant { column, value } => write!(f, "column {column} is constant (every observed value is {value})"),
            Self::ZeroPercentileRange { column, value } => write!(
                f,
                "column {column} has a robust scale of 0 (its 16th and 84th percentiles are both {value})"
            ),
            Self::TinyScale { column, scale, magnitude } => {
                write!(f, "column {column} has scale {scale:e} against values up to {magnitude:e}")
            }
        }
    }
}

/// Lists the first problems of a column report, then how many more there are.
fn list_problems(problems: &[ColumnProblem]) -> String {
    const SHOWN: usize = 10;
    let mut text = problems.iter().take(SHOWN).map(ToString::to_string).collect::<Vec<_>>().join(", ");
    if problems.len() > SHOWN {
        text.push_str(&format!(" and {} more (columns {:?})", problems.len() - SHOWN, problems[SHOWN..].iter().map(ColumnProblem::column).collect::<Vec<_>>()));
    }
    text
}
