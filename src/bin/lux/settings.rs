//! Command-line options and the defaults they start from.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

/// Defaults of `lux fit`, in one place.
///
/// K, the biases, log10 Teff, the mask, the scatter, the label weight, the refit of the
/// label map, the stopping rule and its tolerance are the best setting of a 5-fold
/// cross-validation study on MILES binned by 4 (see README).
pub struct Settings {
    pub latents: usize,
    pub bias: bool,
    /// Labels fitted as log10 (when the table has them).
    pub log_labels: &'static str,
    pub mask_nonpositive: bool,
    pub normalization: Norm,
    pub snr: f64,
    /// Fraction of a spectrum's median positive flux below which errors do not drop.
    /// Without it, unbinned MILES has pixels near zero flux whose weight makes the
    /// latent normal equations singular.
    pub error_floor: f64,
    pub bin: usize,
    pub engine: EngineKind,
    pub stopping: Stopping,
    pub tol: f64,
    pub max_cycles: usize,
    pub steps: usize,
    pub learning_rate: f64,
    pub folds: usize,
    pub seed: u64,
    pub label_errors: &'static str,
    pub label_weight: f64,
    pub scatter: bool,
    pub refit_label_map: bool,
    pub label_clip: f64,
    pub outliers: &'static str,
}

pub const DEFAULTS: Settings = Settings {
    latents: 40,
    bias: true,
    log_labels: "teff",
    mask_nonpositive: true,
    normalization: Norm::None,
    snr: 100.0,
    error_floor: lux::survey::DEFAULT_ERROR_FLOOR,
    bin: 1,
    engine: EngineKind::Wls,
    stopping: Stopping::Reference,
    tol: 1e-4,
    max_cycles: 400,
    steps: 10_000,
    learning_rate: 1e-3,
    folds: 5,
    seed: 0,
    label_errors: "teff=2%,logg=0.2,feh=0.1",
    label_weight: 10.0,
    scatter: true,
    refit_label_map: true,
    label_clip: 2.0,
    outliers: "teff=500,logg=1,feh=0.5",
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Norm {
    /// Flux as read.
    None,
    /// Each spectrum divided by the median of its positive pixels.
    Median,
    /// Each spectrum divided by a fitted polynomial pseudo-continuum (degree 5).
    Continuum,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineKind {
    /// Block-coordinate weighted least squares.
    Wls,
    /// MAP by Adam over every free parameter.
    Adam,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Stopping {
    /// Change of the loss relative to its size.
    Relative,
    /// Change of the loss relative to its total drop since the first cycle.
    Reference,
}

#[derive(Parser, Debug)]
#[command(name = "lux", version, about = "Fit Lux models to stellar spectra and labels, and predict labels")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per run: the size difference of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train a model on spectra with labels, cross-validate it, and save it.
    Fit(FitArgs),
    /// Predict labels (with 1-sigma uncertainties) for spectra from a saved model.
    Predict(PredictArgs),
    /// Describe a saved model, or a FITS, .npy, .npz, CSV or MILES parameter file.
    Info(InfoArgs),
}

#[derive(Args, Debug, Clone)]
pub struct SpectraArgs {
    /// Spectrum files (1-D FITS images with a linear wavelength WCS), or directories
    /// searched with --glob.
    #[arg(long, required = true, num_args = 1..)]
    pub spectra: Vec<PathBuf>,
    /// File-name pattern of spectra inside directories given to --spectra.
    #[arg(long, default_value = "*.fits")]
    pub glob: String,
}

#[derive(Args, Debug, Clone)]
pub struct FitArgs {
    #[command(flatten)]
    pub input: SpectraArgs,
    /// Label table: CSV, FITS table, .npy/.npz, or MILES_params.db. Rows are matched to
    /// spectra by id (the file stem, or its last `_`-separated part).
    #[arg(long)]
    pub labels: PathBuf,
    /// Label columns to fit, comma separated (names match ignoring case); default: every
    /// column of the table.
    #[arg(long, value_delimiter = ',')]
    pub label_columns: Option<Vec<String>>,
    /// Id column of a CSV or FITS label table; default: the first column.
    #[arg(long)]
    pub id_column: Option<String>,
    /// Path of the trained model to write (JSON).
    #[arg(long)]
    pub out: PathBuf,

    /// Consecutive pixels averaged into one (after the window).
    #[arg(long, default_value_t = DEFAULTS.bin)]
    pub bin: usize,
    /// Wavelength range kept, `LO,HI` in Å (both ends included); default: all pixels.
    #[arg(long, value_delimiter = ',')]
    pub window: Option<Vec<f64>>,
    /// Per-spectrum normalization.
    #[arg(long, value_enum, default_value_t = DEFAULTS.normalization)]
    pub normalize: Norm,
    /// Assumed signal-to-noise ratio per pixel: flux error = max(|flux|, floor × median) / snr.
    #[arg(long, default_value_t = DEFAULTS.snr, allow_negative_numbers = true)]
    pub snr: f64,
    /// Smallest flux the errors are computed from, as a fraction of each spectrum's
    /// median positive flux (0 = none): a pixel near zero flux gets the error of
    /// floor × median, not a vanishing one.
    #[arg(long, default_value_t = DEFAULTS.error_floor, allow_negative_numbers = true)]
    pub error_floor: f64,
    /// Assumed 1-sigma label errors, comma separated, as NAME=ERR or one ERR per label
    /// column in order. ERR is absolute in the label's unit (`0.2`), or relative to the
    /// value with a `%` (`2%`) or `rel` (`0.02rel`) suffix, or `col:NAME` to read the
    /// 1-sigma errors from column NAME of the label table (`teff=col:TEFF_ERR`). A label
    /// whose error there is NaN, infinite, zero or negative is missing. A value given
    /// here replaces the whole default list, so give a rule for every label.
    #[arg(long, default_value = DEFAULTS.label_errors)]
    pub label_errors: String,
    /// Divides the assumed label errors during training. A spectrum of a thousand
    /// pixels at S/N 100 otherwise sets the latents almost alone, and the latents then
    /// carry little of what the labels need. Reported uncertainties and the saved
    /// model keep the undivided errors.
    #[arg(long, default_value_t = DEFAULTS.label_weight, allow_negative_numbers = true)]
    pub label_weight: f64,
    /// Keeps only stars that have every label column; by default a star with at least
    /// one label trains the model (its missing labels are masked).
    #[arg(long)]
    pub require_all_labels: bool,
    /// Labels fitted as log10 of their value, comma separated; predictions are mapped
    /// back and their errors propagated. `none` for no label. Default: teff, when the
    /// table has it.
    #[arg(long, value_delimiter = ',')]
    pub log_label: Option<Vec<String>>,
    /// Whether non-positive flux pixels are missing (median and continuum
    /// normalization always mask them).
    #[arg(long, default_value_t = DEFAULTS.mask_nonpositive, action = ArgAction::Set)]
    pub mask_nonpositive: bool,

    /// Model: Lux (`label = A z + a`, `flux = B z + b`, Normal(0, 1) priors), or The
    /// Cannon (the labels are the latents and the flux is quadratic in them). The Cannon
    /// trains on stars with every label and ignores --latents, --bias, --label-weight,
    /// --refit-label-map, --label-clip and --start.
    #[arg(long, value_enum, default_value_t = ModelKind::Lux)]
    pub model: ModelKind,
    /// Latent size K.
    #[arg(long, default_value_t = DEFAULTS.latents)]
    pub latents: usize,
    /// Bias vectors `a`, `b` in the label and flux maps.
    #[arg(long, default_value_t = DEFAULTS.bias, action = ArgAction::Set)]
    pub bias: bool,
    /// A fitted per-pixel intrinsic scatter on the flux, added in quadrature to its
    /// errors (HalfNormal(1) prior, standardized flux units).
    #[arg(long, default_value_t = DEFAULTS.scatter, action = ArgAction::Set)]
    pub scatter: bool,
    /// After training, infers the training stars' latents from their flux alone and
    /// refits the label map on them, so that the map is fitted to latents made the way
    /// test stars' latents are.
    #[arg(long, default_value_t = DEFAULTS.refit_label_map, action = ArgAction::Set)]
    pub refit_label_map: bool,
    /// In that refit, leaves out each training label whose residual from the map lies
    /// more than this many robust standard deviations (1.4826 MAD) from the median
    /// residual, then refits, for three rounds at most. A catalogue value that is wrong,
    /// or a star the latents describe badly, then does not pull the map for the rest.
    /// 0 keeps every label.
    #[arg(long, default_value_t = DEFAULTS.label_clip, allow_negative_numbers = true)]
    pub label_clip: f64,

    /// Engine of the training fits (inference of new latents is always block WLS).
    #[arg(long, value_enum, default_value_t = DEFAULTS.engine)]
    pub engine: EngineKind,
    /// Cycle cap of block WLS.
    #[arg(long, default_value_t = DEFAULTS.max_cycles)]
    pub max_cycles: usize,
    /// Tolerance of the block-WLS stopping rule: the change of the loss per cycle,
    /// relative to the loss (`relative`) or to its total drop since the first cycle
    /// (`reference`).
    #[arg(long, default_value_t = DEFAULTS.tol, allow_negative_numbers = true)]
    pub tol: f64,
    /// Stopping rule of block WLS.
    #[arg(long, value_enum, default_value_t = DEFAULTS.stopping)]
    pub stopping: Stopping,
    /// Adam steps (with --engine adam).
    #[arg(long, default_value_t = DEFAULTS.steps)]
    pub steps: usize,
    /// Adam step size (with --engine adam).
    #[arg(long, default_value_t = DEFAULTS.learning_rate, allow_negative_numbers = true)]
    pub learning_rate: f64,
    /// Starting point of the training fit.
    #[arg(long, value_enum, default_value_t = StartKind::Random)]
    pub start: StartKind,
    /// Seed of the random start and of the fold split.
    #[arg(long, default_value_t = DEFAULTS.seed)]
    pub seed: u64,

    /// Folds of the cross-validation (shuffled split); 0 or 1 skips it, and then the
    /// saved model has no label model error to widen its predicted uncertainties.
    #[arg(long, default_value_t = DEFAULTS.folds, conflicts_with = "test_fraction")]
    pub folds: usize,
    /// Validate on one hold-out set of this fraction of the labelled stars instead of folds.
    #[arg(long, allow_negative_numbers = true)]
    pub test_fraction: Option<f64>,
    /// |predicted − catalogue| above which a star counts as a catastrophic outlier,
    /// NAME=VALUE in the label's unit, comma separated.
    #[arg(long, default_value = DEFAULTS.outliers)]
    pub outliers: String,
    /// Penalty α of the ridge-regression baseline (flux to labels, standardized flux
    /// units) reported on the same folds; 0 skips it.
    #[arg(long, default_value_t = 10.0, allow_negative_numbers = true)]
    pub ridge_alpha: f64,
    /// Writes the cross-validated predictions (CSV: id, fold, then catalogue,
    /// predicted and 1-sigma uncertainty per label). The uncertainties there leave out
    /// the label model error, which is measured from these predictions.
    #[arg(long)]
    pub predictions: Option<PathBuf>,
    /// Writes the labels of every input spectrum predicted by the final model from its
    /// flux, computed before the model is saved (the table `lux predict` writes).
    #[arg(long)]
    pub final_predictions: Option<PathBuf>,
    /// Directory for figures (PNG and SVG): one-to-one labels, loss per cycle, spectra.
    #[arg(long)]
    pub plots: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StartKind {
    /// One draw from the priors.
    Random,
    /// Principal components of the standardized labels and flux.
    Pca,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModelKind {
    /// Lux: labels and flux linear in one latent vector per star.
    Lux,
    /// The Cannon: flux quadratic in the labels, which are inferred per star by
    /// Gauss-Newton steps.
    Cannon,
}

#[derive(Args, Debug, Clone)]
pub struct PredictArgs {
    /// The saved model (JSON written by `lux fit`).
    pub model: PathBuf,
    #[command(flatten)]
    pub input: SpectraArgs,
    /// Output: `.csv` (id, then each label and its 1-sigma uncertainty) or `.npy`
    /// (N × 2L: the labels, then their uncertainties); default: CSV on stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Writes the model flux of every spectrum (N × P, preprocessed units) to this `.npy`.
    #[arg(long)]
    pub reconstruct: Option<PathBuf>,
    /// Resamples spectra on another wavelength grid onto the model's input grid (linear
    /// interpolation) instead of stopping with an error. Model pixels outside a
    /// spectrum's wavelength range are missing for that spectrum.
    #[arg(long)]
    pub resample: bool,
}

#[derive(Args, Debug, Clone)]
pub struct InfoArgs {
    /// A saved model, FITS spectrum or table, .npy, .npz, .csv or MILES_params.db.
    pub file: PathBuf,
}
