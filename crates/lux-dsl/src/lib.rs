//! The lux model graph, data sets and preprocessing.
//!
//! A model is a graph of per-object latent vectors, global parameters with priors,
//! deterministic expressions and Gaussian likelihoods. [`ModelBuilder`] is the typed
//! runtime API that the `lux_model!` macro emits calls to.

pub mod autodiff;
pub mod coverage;
pub mod data;
pub mod error;
pub mod eval;
pub mod graph;
pub mod io;
pub mod params;
pub mod preprocess;
pub mod prior;
pub mod simulate;
pub mod structure;

pub use autodiff::Gradient;
pub use coverage::{Coverage, OutputCoverage};
pub use data::{Dataset, OutputData};
pub use error::{ColumnProblem, DataError, GraphError};
pub use eval::{LossTerms, poly_features, poly_monomials};
pub use graph::{Expr, ExprId, LatentId, LatentNode, Model, ModelBuilder, ObserveNode, ParamId, ParamNode, poly_size};
pub use params::Params;
pub use preprocess::ShiftScale;
pub use prior::Prior;
pub use structure::{Block, BlockKind, LatentSymmetry, LinearLayer, Structure, SymmetryMap};

pub use ndarray;
