//! Trained models saved as versioned, self-describing JSON, and label prediction from
//! them.
//!
//! A [`SavedModel`] contains everything needed to predict labels for new spectra without
//! the training data: the model's kind and sizes, the label names and their transforms,
//! the wavelength grid, the preprocessing (window, binning, normalization, mask rule,
//! assumed noise), the shift and scale of every output, the fitted global parameters,
//! the covariance of the label map, and a summary of how the model was fitted.
//!
//! ```json
//! {
//!   "format": "lux-model", "version": 1, "kind": "lux",
//!   "dims": {"latents": 40, "labels": 3, "pixels": 4300},
//!   "labels": [{"name": "teff", "transform": "log10"}, ...],
//!   "wavelength": [...],
//!   "preprocessing": {"input_wavelength": [...], "window": null, "bin": 1, ...},
//!   "model": {"bias": true, "scatter": false},
//!   "scaler": [{"output": "flux", "shift": [...], "scale": [...]}, ...],
//!   "params": [{"name": "A", "shape": [3, 40], "data": [...]}, ...],
//!   "label_map_covariance": {"name": "label_map_covariance", "shape": [3, 41, 41], ...},
//!   "fit": {"engine": "block_wls", "status": "converged", "cycles": 97, ...}
//! }
//! ```
//!
//! Arrays are stored flat in row-major order beside their shape. Floats are written in
//! the shortest form that reads back to the same bits, so a loaded model predicts
//! exactly what the model in memory did.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use lux_dsl::{DataError, Dataset, GraphError, Model, ModelBuilder, Params, Prior, ShiftScale};
use lux_infer::{BlockWls, Engine, FitError, FitOptions, StoppingRule, latent_covariance, predict_with_uncertainty};
use ndarray::{Array1, Array2, ArrayD, Axis, IxDyn};
use serde::{Deserialize, Serialize};

use crate::ridge::Ridge;
use crate::survey::{ContinuumFit, Normalization, SpectraSet, SurveyError, flux_errors};

/// Value of the `format` field of every saved model.
pub const FORMAT: &str = "lux-model";

/// The newest layout this library writes and reads.
pub const VERSION: u32 = 1;

/// Kind of the Lux model: `label = A z + a`, `flux = B z + b`.
pub const KIND_LUX: &str = "lux";

/// Kind of The Cannon: the labels are the latents, `flux = theta · poly(y, 2)`.
pub const KIND_CANNON: &str = "cannon";

/// Prior standard deviation of The Cannon's coefficients, in standardized flux units:
/// wide enough to leave every coefficient to the data, finite so that a pixel's normal
/// equations stay regular when the training labels are nearly collinear.
pub const CANNON_THETA_PRIOR: f64 = 10.0;

/// Penalty of the ridge regression that gives The Cannon's starting labels, in
/// standardized flux units: the default of the ridge baseline of `lux fit`.
pub const CANNON_START_ALPHA: f64 = 10.0;

/// Cycle cap and relative tolerance of The Cannon's label inference.
const CANNON_INFERENCE_CYCLES: usize = 100;
const CANNON_INFERENCE_TOL: f64 = 1e-10;

/// Errors from saving, loading or using a saved model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SavedError {
    /// The file could not be read, written or renamed.
    #[error("{}: {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// The file is not valid JSON, or a field has the wrong type.
    #[error("{}: not a readable lux model: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// The `format` field is absent or names another format.
    #[error("{}: not a lux model file: `format` is {found}, expected \"{FORMAT}\"", path.display())]
    Format { path: PathBuf, found: String },

    /// The `version` field is newer than this library or not a known version.
    #[error(
        "{}: model file version {found} is not supported: this build reads version {supported}; \
         refit the model or use the lux release that wrote it",
        path.display()
    )]
    Version { path: PathBuf, found: String, supported: u32 },

    /// The model is of a kind this library does not rebuild.
    #[error("{}: model kind `{found}` is not supported: this build knows `{KIND_LUX}` and `{KIND_CANNON}`", path.display())]
    Kind { path: PathBuf, found: String },

    /// Two fields of the model disagree (a parameter of the wrong size, a grid of the
    /// wrong length).
    #[error("{}: inconsistent model: {detail}", path.display())]
    Inconsistent { path: PathBuf, detail: String },

    /// The spectra handed to the model are not on its grid after preprocessing.
    #[error(
        "spectra have {found} pixels from {found_lo:.3} to {found_hi:.3} Å after preprocessing, \
         the model has {expected} pixels from {expected_lo:.3} to {expected_hi:.3} Å"
    )]
    GridMismatch {
        found: usize,
        found_lo: f64,
        found_hi: f64,
        expected: usize,
        expected_lo: f64,
        expected_hi: f64,
    },

    #[error(transparent)]
    Survey(#[from] SurveyError),

    #[error(transparent)]
    Graph(#[from] GraphError),

    #[error(transparent)]
    Data(#[from] DataError),

    #[error(transparent)]
    Fit(#[from] FitError),
}

/// Sizes of a model (for The Cannon, `latents` equals `labels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dims {
    /// Latent size K.
    pub latents: usize,
    /// Number of labels L.
    pub labels: usize,
    /// Number of flux pixels P after preprocessing.
    pub pixels: usize,
}

/// Transform of a label before the fit. Predictions are mapped back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelTransform {
    /// Fitted as given.
    Identity,
    /// Fitted as log10 of the value; values ≤ 0 are missing.
    Log10,
}

/// One label: its column name and transform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelSpec {
    pub name: String,
    pub transform: LabelTransform,
}

impl LabelSpec {
    /// Maps catalogue values and their 1-sigma errors to the fitted scale. For log10,
    /// `σ_log = σ / (|v| ln 10)`; a value ≤ 0 becomes missing (NaN, infinite error).
    pub fn forward(&self, value: f64, error: f64) -> (f64, f64) {
        match self.transform {
            LabelTransform::Identity => (value, error),
            LabelTransform::Log10 if value > 0.0 => (value.log10(), error / (value * std::f64::consts::LN_10)),
            LabelTransform::Log10 => (f64::NAN, f64::INFINITY),
        }
    }

    /// Maps a prediction and its 1-sigma uncertainty back to the catalogue scale. For
    /// log10 the uncertainty is propagated to first order: `σ = v ln 10 σ_log`.
    pub fn inverse(&self, value: f64, std: f64) -> (f64, f64) {
        match self.transform {
            LabelTransform::Identity => (value, std),
            LabelTransform::Log10 => {
                let v = 10f64.powf(value);
                (v, v * std::f64::consts::LN_10 * std)
            }
        }
    }
}

/// Per-spectrum normalization as saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "method")]
pub enum SavedNormalization {
    None,
    Median,
    Continuum {
        degree: usize,
        low_sigma: f64,
        high_sigma: f64,
        max_iter: usize,
    },
}

impl SavedNormalization {
    /// Returns the normalization of [`crate::survey`] that this value describes.
    pub fn to_survey(&self) -> Normalization {
        match *self {
            Self::None => Normalization::None,
            Self::Median => Normalization::Median,
            Self::Continuum {
                degree,
                low_sigma,
                high_sigma,
                max_iter,
            } => Normalization::Continuum(ContinuumFit {
                degree,
                low_sigma,
                high_sigma,
                max_iter,
            }),
        }
    }
}

/// Everything done to raw spectra before they reach the model, in this order: window,
/// binning, normalization (with the mask rule), assumed errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    /// Wavelengths (Å) of the spectra as read, before the window and binning. New
    /// spectra must be on this grid, or be resampled onto it.
    pub input_wavelength: Vec<f64>,
    /// Kept range `[lo, hi]` in Å, both ends included; `None` keeps every pixel.
    pub window: Option<[f64; 2]>,
    /// Consecutive pixels averaged into one.
    pub bin: usize,
    pub normalization: SavedNormalization,
    /// Whether non-positive flux pixels are missing. Median and continuum normalization
    /// always mask them.
    pub mask_nonpositive: bool,
    /// Assumed signal-to-noise ratio per pixel: `σ = max(|f|, floor · median) / snr`.
    pub snr: f64,
    /// Error floor as a fraction of each spectrum's median positive flux.
    pub error_floor: f64,
}

impl Preprocessing {
    /// Applies window, binning and normalization to spectra on the input grid.
    pub fn apply(&self, spectra: &SpectraSet) -> Result<SpectraSet, SurveyError> {
        let mut out = match self.window {
            Some([lo, hi]) => spectra.window(lo, hi)?,
            None => spectra.clone(),
        };
        if self.bin != 1 {
            out = out.bin(self.bin)?;
        }
        // `normalize` with `None` still masks non-positive pixels; skip it when they are kept.
        if self.mask_nonpositive || self.normalization != SavedNormalization::None {
            out = out.normalize(&self.normalization.to_survey())?;
        }
        Ok(out)
    }

    /// Returns the assumed 1-sigma errors of preprocessed flux. Missing pixels get an infinite error.
    pub fn flux_errors(&self, flux: &Array2<f64>) -> Result<Array2<f64>, SurveyError> {
        flux_errors(flux, self.snr, self.error_floor)
    }
}

/// Model options beyond the sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Bias vectors `a` and `b` in `A z + a`, `B z + b`.
    pub bias: bool,
    /// A fitted per-pixel intrinsic scatter `s` on the flux (HalfNormal(1) prior).
    pub scatter: bool,
}

/// Shift and scale of one output's columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedScaler {
    pub output: String,
    pub shift: Vec<f64>,
    pub scale: Vec<f64>,
}

/// One array: name, shape and row-major data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedArray {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl SavedArray {
    /// Copies an array.
    pub fn from_array(name: &str, array: &ArrayD<f64>) -> Self {
        Self {
            name: name.to_string(),
            shape: array.shape().to_vec(),
            data: array.iter().copied().collect(),
        }
    }

    /// Returns the array, or `None` if the data length does not match the shape.
    pub fn to_array(&self) -> Option<ArrayD<f64>> {
        ArrayD::from_shape_vec(IxDyn(&self.shape), self.data.clone()).ok()
    }
}

/// Pooled cross-validation figures of one label, in catalogue units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelMetrics {
    pub name: String,
    /// Stars with both a catalogue value and a prediction.
    pub n: usize,
    pub rmse: f64,
    /// 1.4826 times the median absolute deviation of predicted − catalogue.
    pub robust_scatter: f64,
    /// |predicted − catalogue| above which a star counts as a catastrophic outlier;
    /// `None` when no threshold was set for this label.
    pub outlier_threshold: Option<f64>,
    pub outliers: Option<usize>,
}

/// Cross-validation summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CvSummary {
    /// `k-fold` or `holdout`.
    pub scheme: String,
    /// Number of folds (1 for a hold-out split).
    pub folds: usize,
    pub labels: Vec<LabelMetrics>,
    /// Mean training time per fold, seconds.
    pub mean_fit_seconds: f64,
    /// Mean inference time per fold (latents, uncertainties, labels), seconds.
    pub mean_infer_seconds: f64,
}

/// Summary of the fit that produced the saved parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitSummary {
    /// `block_wls` or `adam`.
    pub engine: String,
    /// `converged`, `stalled`, `max_iterations` or `diverged`.
    pub status: String,
    /// Cycles (block WLS) or steps (Adam) taken.
    pub cycles: usize,
    pub loss: f64,
    pub max_abs_grad: f64,
    /// Stars the final model was trained on.
    pub n_train: usize,
    pub seed: u64,
    pub seconds: f64,
    /// Cycle cap of block WLS, also used when inferring latents of new spectra.
    pub max_cycles: usize,
    /// Tolerance of the block-WLS stopping rule, also used when inferring latents.
    pub tol: f64,
    /// `relative` or `reference`.
    pub stopping: String,
    /// Adam steps and learning rate (Adam only).
    pub steps: Option<usize>,
    pub learning_rate: Option<f64>,
    /// Loss after each cycle or before each step.
    pub loss_history: Vec<f64>,
    /// Factor dividing the assumed label errors during training (1 = none).
    #[serde(default = "unit_weight")]
    pub label_weight: f64,
    /// Whether the label map was refitted on latents inferred from flux alone.
    #[serde(default)]
    pub refit_label_map: bool,
    /// Robust standard deviations beyond which a training label was left out of the
    /// refit of the label map (0 = none), and how many were left out.
    #[serde(default)]
    pub label_clip: f64,
    #[serde(default)]
    pub labels_clipped: usize,
    pub cv: Option<CvSummary>,
}

fn unit_weight() -> f64 {
    1.0
}

impl FitSummary {
    /// Returns the block-WLS engine that infers latents for new spectra.
    pub fn inference_engine(&self) -> BlockWls {
        let mut wls = BlockWls::new(self.max_cycles, self.tol);
        wls.stopping = if self.stopping == "relative" { StoppingRule::RelativeChange } else { StoppingRule::Reference };
        wls
    }
}

/// A trained model with its preprocessing, as written to and read from JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedModel {
    pub format: String,
    pub version: u32,
    pub kind: String,
    pub dims: Dims,
    pub labels: Vec<LabelSpec>,
    /// Wavelength (Å) of each model pixel, after window and binning.
    pub wavelength: Vec<f64>,
    pub preprocessing: Preprocessing,
    pub model: ModelSpec,
    /// Shift and scale of `label` (on the transformed labels) and `flux`.
    pub scaler: Vec<SavedScaler>,
    /// Fitted global parameters: `A`, `B`, and `a`, `b`, `s` where present (Lux), or
    /// `theta` and `s` (The Cannon).
    pub params: Vec<SavedArray>,
    /// Posterior covariance of each row of `[A a]` (L×D×D, D = K + 1 with a bias), in
    /// standardized units, given the training latents; `None` when it was not computed.
    pub label_map_covariance: Option<SavedArray>,
    /// Per label, a model error added in quadrature to every predicted uncertainty, in
    /// the fitted units of the label (dex for a log10 label). `lux fit` sets it from its
    /// cross-validation, so that the held-out residuals have unit robust scatter in
    /// units of their predicted uncertainty; `None` without cross-validation.
    #[serde(default)]
    pub label_model_error: Option<Vec<f64>>,
    /// The Cannon only: a ridge regression from the preprocessed flux to the
    /// standardized labels, fitted on the training stars. New stars' labels start
    /// there, so that Gauss-Newton begins in the right basin rather than at the mean
    /// label. `None` starts every star at the mean label.
    #[serde(default)]
    pub cannon_start: Option<Ridge>,
    pub fit: FitSummary,
}

/// Labels predicted for a set of spectra, in catalogue units.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// Label names, one per column.
    pub names: Vec<String>,
    /// N×L predicted labels.
    pub values: Array2<f64>,
    /// N×L 1-sigma uncertainties: latent posterior and label-map covariance propagated,
    /// plus the label model error when the model has one. Without it they assume the
    /// model is right and the flux errors are as given. On MILES (assumed S/N 100) the
    /// robust scatter of cross-validated residuals is then 3 to 4 times their median.
    pub errors: Array2<f64>,
    /// N×P model flux, in the units of the preprocessed spectra.
    pub reconstruction: Array2<f64>,
    /// The inference of the latents.
    pub inference: lux_infer::Fit,
}

/// Builds The Cannon (Ness et al. 2015) for L labels and P pixels: the standardized
/// labels are the latents `y` (flat prior) and are observed directly, and the flux is
/// `theta · poly(y, 2)`, the constant, linear and quadratic terms of the labels, with
/// `theta ~ Normal(0, 10)`. With `scatter`, a per-pixel `s ~ HalfNormal(1)` is added
/// in quadrature to the flux errors.
pub fn build_cannon(dims: Dims, spec: ModelSpec) -> Result<Model, GraphError> {
    let mut b = ModelBuilder::default();
    let y = b.latent("y", dims.labels, Prior::Flat)?;
    let features = b.poly(y, 2)?;
    let n_features = 1 + dims.labels + dims.labels * (dims.labels + 1) / 2;
    let theta = b.param("theta", &[dims.pixels, n_features], Prior::normal(0.0, CANNON_THETA_PRIOR))?;
    let flux = b.linear(theta, features)?;
    let scatter = if spec.scatter { Some(b.param("s", &[dims.pixels], Prior::half_normal(1.0))?) } else { None };
    b.observe("label", y, None)?;
    b.observe("flux", flux, scatter)?;
    b.build()
}

/// Builds the Lux model: `z ~ Normal(0, 1)` of size K, `label = A z (+ a)`,
/// `flux = B z (+ b)`, every map element `Normal(0, 1)`, and with `scatter` a per-pixel
/// intrinsic scatter `s ~ HalfNormal(1)` added in quadrature to the flux errors.
pub fn build_lux(dims: Dims, spec: ModelSpec) -> Result<Model, GraphError> {
    let mut b = ModelBuilder::default();
    let z = b.latent("z", dims.latents, Prior::standard_normal())?;
    let a = b.param("A", &[dims.labels, dims.latents], Prior::standard_normal())?;
    let bb = b.param("B", &[dims.pixels, dims.latents], Prior::standard_normal())?;
    let (label, flux) = if spec.bias {
        let a0 = b.param("a", &[dims.labels], Prior::standard_normal())?;
        let b0 = b.param("b", &[dims.pixels], Prior::standard_normal())?;
        (b.affine(a, z, a0)?, b.affine(bb, z, b0)?)
    } else {
        (b.linear(a, z)?, b.linear(bb, z)?)
    };
    let scatter = if spec.scatter { Some(b.param("s", &[dims.pixels], Prior::half_normal(1.0))?) } else { None };
    b.observe("label", label, None)?;
    b.observe("flux", flux, scatter)?;
    b.build()
}

impl SavedModel {
    /// Rebuilds the model graph.
    pub fn model(&self) -> Result<Model, SavedError> {
        Ok(match self.kind.as_str() {
            KIND_CANNON => build_cannon(self.dims, self.model)?,
            _ => build_lux(self.dims, self.model)?,
        })
    }

    /// Returns the engine that infers new stars' latents. Lux uses the training
    /// settings, because its latents are one exact solve per star. The Cannon's labels
    /// are nonlinear in the flux, so they take Gauss-Newton steps to a tight tolerance.
    pub fn inference_engine(&self) -> BlockWls {
        match self.kind.as_str() {
            KIND_CANNON => BlockWls::new(CANNON_INFERENCE_CYCLES, CANNON_INFERENCE_TOL),
            _ => self.fit.inference_engine(),
        }
    }

    /// Returns the fitted global parameters, with the latents of `n_objects` objects at zero.
    pub fn params(&self, n_objects: usize) -> Result<Params, SavedError> {
        let mut params = Params::new(Array2::zeros((n_objects, self.dims.latents)));
        for saved in &self.params {
            let array = saved.to_array().ok_or_else(|| self.inconsistent(format!(
                "parameter `{}` has {} values for shape {:?}",
                saved.name,
                saved.data.len(),
                saved.shape
            )))?;
            params.insert(&saved.name, array);
        }
        Ok(params)
    }

    /// Returns the shift and scale of every output.
    pub fn scaler(&self) -> Result<ShiftScale, SavedError> {
        let parts: BTreeMap<String, (Array1<f64>, Array1<f64>)> = self
            .scaler
            .iter()
            .map(|s| (s.output.clone(), (Array1::from(s.shift.clone()), Array1::from(s.scale.clone()))))
            .collect();
        Ok(ShiftScale::from_parts(parts)?)
    }

    /// Label names in column order.
    pub fn label_names(&self) -> Vec<String> {
        self.labels.iter().map(|l| l.name.clone()).collect()
    }

    /// Writes the model as JSON to a temporary file beside `path`, then renames it over
    /// `path`, so a failure leaves no partial file.
    pub fn save(&self, path: &Path) -> Result<(), SavedError> {
        let text = serde_json::to_vec(self).map_err(|source| SavedError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        write_atomic(path, &text)
    }

    /// Reads a model, checking `format`, `version` and `kind` before the other fields,
    /// then that the parameters, scaler and grid agree with the sizes.
    pub fn load(path: &Path) -> Result<Self, SavedError> {
        let text = fs::read(path).map_err(|source| SavedError::Io {
            path: path.to_path_buf(),
            action: "cannot read the model file",
            source,
        })?;
        let json_error = |source| SavedError::Json {
            path: path.to_path_buf(),
            source,
        };
        let value: serde_json::Value = serde_json::from_slice(&text).map_err(json_error)?;
        let field = |name: &str| value.get(name).map_or_else(|| "absent".to_string(), |v| v.to_string());

        if value.get("format").and_then(|v| v.as_str()) != Some(FORMAT) {
            return Err(SavedError::Format {
                path: path.to_path_buf(),
                found: field("format"),
            });
        }
        if value.get("version").and_then(|v| v.as_u64()) != Some(u64::from(VERSION)) {
            return Err(SavedError::Version {
                path: path.to_path_buf(),
                found: field("version"),
                supported: VERSION,
            });
        }
        match value.get("kind").and_then(|v| v.as_str()) {
            Some(KIND_LUX | KIND_CANNON) => {}
            _ => {
                return Err(SavedError::Kind {
                    path: path.to_path_buf(),
                    found: value.get("kind").and_then(|v| v.as_str()).map_or_else(|| field("kind"), str::to_string),
                });
            }
        }

        let mut model: SavedModel = serde_json::from_value(value).map_err(json_error)?;
        model.check().map_err(|err| match err {
            SavedError::Inconsistent { detail, .. } => SavedError::Inconsistent {
                path: path.to_path_buf(),
                detail,
            },
            other => other,
        })?;
        model.format = FORMAT.to_string();
        Ok(model)
    }

    /// Checks that every field agrees with the sizes.
    pub fn check(&self) -> Result<(), SavedError> {
        let Dims { latents: k, labels: l, pixels: p } = self.dims;
        if self.kind == KIND_CANNON && k != l {
            return Err(self.inconsistent(format!("a Cannon model has one latent per label: {k} latents for {l} labels")));
        }
        if let Some(ridge) = &self.cannon_start {
            let sizes_agree = ridge.mean.len() == p
                && ridge.scale.len() == p
                && ridge.center.len() == l
                && ridge.weights.len() == l
                && ridge.weights.iter().all(|w| w.len() == p);
            if !sizes_agree {
                return Err(self.inconsistent(format!("the starting ridge regression is not {l} labels by {p} pixels")));
            }
        }
        if self.kind == KIND_CANNON && self.label_map_covariance.is_some() {
            return Err(self.inconsistent("a Cannon model has no label map, but the file has its covariance".into()));
        }
        if self.labels.len() != l {
            return Err(self.inconsistent(format!("{} label names for {l} labels", self.labels.len())));
        }
        if self.wavelength.len() != p {
            return Err(self.inconsistent(format!("{} wavelengths for {p} pixels", self.wavelength.len())));
        }
        let model = self.model()?;
        let params = self.params(1)?;
        model.check_params(&params)?;
        for (output, size) in [("label", l), ("flux", p)] {
            let scaler = self.scaler.iter().find(|s| s.output == output);
            let Some(scaler) = scaler.filter(|s| s.shift.len() == size && s.scale.len() == size) else {
                return Err(self.inconsistent(format!("no shift and scale of {size} values for output `{output}`")));
            };
            let _ = scaler;
        }
        if let Some(cov) = &self.label_map_covariance {
            let d = k + usize::from(self.model.bias);
            if cov.shape != [l, d, d] || cov.data.len() != l * d * d {
                return Err(self.inconsistent(format!(
                    "label map covariance has shape {:?} and {} values, expected [{l}, {d}, {d}]",
                    cov.shape,
                    cov.data.len()
                )));
            }
        }
        Ok(())
    }

    fn inconsistent(&self, detail: String) -> SavedError {
        SavedError::Inconsistent {
            path: PathBuf::from("(model in memory)"),
            detail,
        }
    }

    /// Applies the saved window, binning and normalization to spectra on the input
    /// grid, and checks that the result is on the model's grid.
    pub fn prepare(&self, spectra: &SpectraSet) -> Result<SpectraSet, SavedError> {
        let prepared = self.preprocessing.apply(spectra)?;
        let found = &prepared.wavelength;
        let tolerance = 1e-4 * pixel_width(&self.wavelength);
        let same = found.len() == self.wavelength.len()
            && found.iter().zip(&self.wavelength).all(|(a, b)| (a - b).abs() <= tolerance);
        if !same {
            return Err(SavedError::GridMismatch {
                found: found.len(),
                found_lo: found.first().copied().unwrap_or(f64::NAN),
                found_hi: found.last().copied().unwrap_or(f64::NAN),
                expected: self.wavelength.len(),
                expected_lo: self.wavelength.first().copied().unwrap_or(f64::NAN),
                expected_hi: self.wavelength.last().copied().unwrap_or(f64::NAN),
            });
        }
        Ok(prepared)
    }

    /// Predicts labels for spectra on the input grid ([`SavedModel::prepare`] first).
    pub fn predict(&self, spectra: &SpectraSet) -> Result<Prediction, SavedError> {
        let prepared = self.prepare(spectra)?;
        self.predict_flux(&prepared.flux)
    }

    /// Predicts labels for preprocessed flux (N×P, NaN where missing).
    ///
    /// Each star's latents are inferred from its flux with the global parameters fixed
    /// (block WLS). The latent posterior covariance and the label-map covariance are
    /// propagated to the labels, which are mapped back to catalogue units.
    pub fn predict_flux(&self, flux: &Array2<f64>) -> Result<Prediction, SavedError> {
        self.check()?;
        let model = self.model()?;
        let scaler = self.scaler()?;
        let n = flux.nrows();
        let errors = self.preprocessing.flux_errors(flux)?;
        let raw = Dataset::new().with_errors("flux", flux.clone(), errors)?;
        let data = scaler.transform(&raw)?;

        let trained = self.params(n)?;
        let mut options = FitOptions::infer_latents(&model, &trained, n);
        if let (Some(ridge), Some(init)) = (&self.cannon_start, options.init.as_mut()) {
            let start = ridge.predict(flux).mapv(|v| if v.is_finite() { v } else { 0.0 });
            init.set_latents(start);
        }
        let inference = self.inference_engine().fit(&model, &data, &options)?;

        let covariance = latent_covariance(&model, &inference.params, &data)?;
        let labels = predict_with_uncertainty(&model, &inference.params, &covariance, None, "label", false)?;
        let mut variance = labels.std.mapv(|s| s * s);
        if let Some(map) = &self.label_map_covariance {
            let rows = map
                .to_array()
                .and_then(|a| a.into_dimensionality::<ndarray::Ix3>().ok())
                .expect("checked above: L×D×D values");
            let z = inference.params.latents();
            for i in 0..n {
                let mut x = z.row(i).to_vec();
                if self.model.bias {
                    x.push(1.0);
                }
                let x = Array1::from(x);
                for (l, sigma) in rows.axis_iter(Axis(0)).enumerate() {
                    variance[[i, l]] += x.dot(&sigma.dot(&x));
                }
            }
        }

        let shift = scaler.shift("label").expect("checked above: the scaler has `label`");
        let scale = scaler.scale("label").expect("checked above: the scaler has `label`");
        let mut values = Array2::zeros((n, self.dims.labels));
        let mut errors = Array2::zeros((n, self.dims.labels));
        for i in 0..n {
            for (l, spec) in self.labels.iter().enumerate() {
                let fitted = labels.mean[[i, l]] * scale[l] + shift[l];
                let model_error = self.label_model_error.as_ref().map_or(0.0, |e| e[l]);
                let std = (variance[[i, l]] * scale[l] * scale[l] + model_error * model_error).sqrt();
                let (v, e) = spec.inverse(fitted, std);
                values[[i, l]] = v;
                errors[[i, l]] = e;
            }
        }

        let standardized = model.predict(&inference.params)?;
        let reconstruction = scaler.inverse_values("flux", standardized["flux"].view())?;
        Ok(Prediction {
            names: self.label_names(),
            values,
            errors,
            reconstruction,
            inference,
        })
    }
}

/// Mean pixel width of a grid (1 for fewer than two pixels).
fn pixel_width(wavelength: &[f64]) -> f64 {
    match wavelength {
        [first, .., last] => (last - first) / (wavelength.len() - 1) as f64,
        _ => 1.0,
    }
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`; on
/// failure the temporary file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SavedError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let io = |path: &Path, action, source| SavedError::Io {
        path: path.to_path_buf(),
        action,
        source,
    };
    let name = path.file_name().ok_or_else(|| {
        io(path, "cannot write", std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file"))
    })?;
    let temp = path.with_file_name(format!(
        ".{}.{}-{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));

    let result = (|| {
        let file = File::create_new(&temp).map_err(|e| io(&temp, "cannot create", e))?;
        let mut writer = BufWriter::new(file);
        writer.write_all(bytes).map_err(|e| io(&temp, "cannot write", e))?;
        let file = writer.into_inner().map_err(|e| io(&temp, "cannot write", e.into_error()))?;
        file.sync_all().map_err(|e| io(&temp, "cannot write", e))?;
        fs::rename(&temp, path).map_err(|e| io(path, "cannot replace", e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> SavedModel {
        let dims = Dims { latents: 2, labels: 1, pixels: 3 };
        let spec = ModelSpec { bias: true, scatter: false };
        let model = build_lux(dims, spec).unwrap();
        let params = model.sample_params(1, 7);
        SavedModel {
            format: FORMAT.into(),
            version: VERSION,
            kind: KIND_LUX.into(),
            dims,
            labels: vec![LabelSpec { name: "teff".into(), transform: LabelTransform::Log10 }],
            wavelength: vec![5000.0, 5001.0, 5002.0],
            preprocessing: Preprocessing {
                input_wavelength: vec![5000.0, 5001.0, 5002.0],
                window: None,
                bin: 1,
                normalization: SavedNormalization::None,
                mask_nonpositive: true,
                snr: 100.0,
                error_floor: 0.0,
            },
            model: spec,
            scaler: vec![
                SavedScaler { output: "label".into(), shift: vec![3.7], scale: vec![0.1] },
                SavedScaler { output: "flux".into(), shift: vec![1.0; 3], scale: vec![0.5; 3] },
            ],
            params: params.globals().map(|(name, a)| SavedArray::from_array(name, a)).collect(),
            label_map_covariance: None,
            label_model_error: None,
            cannon_start: None,
            fit: FitSummary {
                label_weight: 1.0,
                refit_label_map: false,
                label_clip: 0.0,
                labels_clipped: 0,
                engine: "block_wls".into(),
                status: "converged".into(),
                cycles: 3,
                loss: 0.1 + 0.2,
                max_abs_grad: 1e-9,
                n_train: 1,
                seed: 0,
                seconds: 0.0,
                max_cycles: 50,
                tol: 1e-6,
                stopping: "reference".into(),
                steps: None,
                learning_rate: None,
                loss_history: vec![1.0 / 3.0],
                cv: None,
            },
        }
    }

    #[test]
    fn roundtrip_exact() {
        let dir = std::env::temp_dir().join(format!("lux-saved-rt-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.json");
        let model = tiny();
        model.save(&path).unwrap();
        assert_eq!(SavedModel::load(&path).unwrap(), model);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn load_rejects_version_and_kind() {
        let dir = std::env::temp_dir().join(format!("lux-saved-bad-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.json");
        let mut value = serde_json::to_value(tiny()).unwrap();
        value["version"] = 2.into();
        fs::write(&path, value.to_string()).unwrap();
        let err = SavedModel::load(&path).unwrap_err().to_string();
        assert!(err.contains("version 2"), "{err}");
        assert!(err.contains("version 1"), "{err}");

        value["version"] = 1.into();
        value["kind"] = "payne".into();
        fs::write(&path, value.to_string()).unwrap();
        let err = SavedModel::load(&path).unwrap_err().to_string();
        assert!(err.contains("`payne`"), "{err}");
        assert!(err.contains("m.json"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn log_label_error_propagation() {
        let spec = LabelSpec { name: "teff".into(), transform: LabelTransform::Log10 };
        let (v, e) = spec.forward(5000.0, 100.0);
        assert!((v - 5000f64.log10()).abs() < 1e-15);
        // Back and forth gives the same error to first order: σ_T = T ln10 σ_logT.
        let (t, s) = spec.inverse(v, e);
        assert!((t - 5000.0).abs() < 1e-9, "{t}");
        assert!((s - 100.0).abs() < 1e-9, "{s}");
    }
}
