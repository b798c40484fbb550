//! Inference engines for lux models.
//!
//! Every engine implements [`Engine`] and minimizes the same loss, the negative log
//! posterior of the model graph, so engines are interchangeable per model and per fit:
//!
//! - [`BlockWls`]: block-coordinate descent that solves every block the graph proves
//!   linear-Gaussian exactly and hands the others to Adam steps.
//! - [`Adam`]: MAP by Adam over every free parameter.

pub mod adam;
pub mod engine;
pub mod error;
mod fused;
pub mod gradient;
pub mod uncertainty;
pub mod wls;

pub use adam::Adam;
pub use engine::{BlockMethod, BlockReport, Engine, Fit, FitOptions, FitStatus, Free};
pub use error::FitError;
pub use gradient::{Gradient, GradientBackend};
pub use uncertainty::{
    CovarianceMethod, LatentCovariance, MapCovariance, PredictionUncertainty, latent_covariance, map_covariance,
    predict_with_uncertainty,
};
pub use wls::{BlockWls, CycleObserver, StoppingRule};
