//! lux: data-driven latent-variable models of stellar spectra and labels.
//!
//! Every object (star) gets a small latent vector. Each output (labels, flux) is a
//! deterministic function of it, observed with Gaussian noise of the reported errors.
//! This facade re-exports the model graph (`lux::dsl`) and the engines (`lux::infer`).

// The README's example is compiled as a doctest, so it cannot drift from the API.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub use lux_dsl as dsl;
pub use lux_infer as infer;
pub mod survey;
pub mod plot;
pub mod ridge;
pub mod saved;
pub mod start;
#[doc(inline)]
pub use lux_macros::lux_model;

/// The names most programs need.
pub mod prelude {
    pub use lux_dsl::preprocess::ShiftScale;
    pub use lux_dsl::{Dataset, Model, ModelBuilder, Params, Prior};
    pub use lux_infer::{Adam, BlockWls, Engine, Fit, FitOptions};
}
