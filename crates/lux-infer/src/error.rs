//! Errors of the inference engines.

use lux_dsl::DataError;
use thiserror::Error;

/// Reason a fit failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FitError {
    #[error(transparent)]
    Data(#[from] DataError),

    #[error(
        "the normal equations of block `{block}` are singular at {what} {index}{detail}: if that {what} has too little data, drop it or give the block a Normal prior; otherwise look for extreme values or errors in the data (sentinels such as 1e30, errors near 0) and mask them"
    )]
    Singular {
        block: String,
        what: &'static str,
        index: usize,
        /// Location of the largest weight of that system, when known, as
        /// ` (largest inverse variance 1.7e20, at `flux` element 812)`.
        detail: String,
    },

    #[error("unknown block `{name}`; name one of the model's blocks: {available}")]
    UnknownBlock { name: String, available: String },

    #[error("unknown parameter `{name}` in the fixed set; name one of the model's parameters: {available}")]
    UnknownParameter { name: String, available: String },

    #[error("invalid setting {setting} = {value}: {reason}")]
    InvalidSetting {
        setting: &'static str,
        value: String,
        reason: &'static str,
    },

    #[error("nothing to fit: every block is fixed")]
    NothingFree,

    #[error("`{name}` is a latent, not a global parameter; hold the latents fixed with `FitOptions::fix_latents`")]
    LatentInFixedSet { name: String },

    #[error(
        "`{name}` is held fixed but has no starting value; pass the values with `FitOptions::from_init` or `FitOptions::infer_latents`"
    )]
    FixedWithoutValue { name: String },
}
