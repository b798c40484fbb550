//! Shared helpers of the integration tests: the seed-linear reference data set.

#![allow(dead_code)]

use std::path::PathBuf;

use lux::dsl::ndarray::{Array2, Ix2};
use lux::dsl::{Dataset, Model, Params, Prior, io::read_array, preprocess::ShiftScale};

/// Directory of the seed-linear reference set: `$LUX_SHARED_DATA/seed-linear`, or the
/// `shared/data` folder beside the repository.
pub fn seed_linear_dir() -> PathBuf {
    let base = std::env::var_os("LUX_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    let dir = base.join("seed-linear");
    assert!(
        dir.join("flux.npy").exists(),
        "reference data not found at {}; set LUX_SHARED_DATA to the folder holding seed-linear",
        dir.display()
    );
    dir
}

/// Reads one float64 2-D array of the reference set.
pub fn read2(name: &str) -> Array2<f64> {
    read_array::<Ix2>(&seed_linear_dir().join(name)).expect("reference array")
}

/// Loads the reference set preprocessed as the reference library does (mean and population
/// std per column over all 2048 rows), split into training rows 0..1024 and test rows.
pub fn seed_linear() -> (Dataset, Dataset) {
    let raw = Dataset::from_npy_files(&seed_linear_dir(), &["label", "flux"]).expect("reference data");
    let scaler = ShiftScale::fit(&raw).expect("preprocessing");
    let data = scaler.transform(&raw).expect("preprocessing");
    data.split_at(1024).expect("split")
}

/// Builds the tutorial's Lux model: 8 latents, 2 labels, 128 pixels, every prior
/// Normal(0, 1).
pub fn lux_model() -> Model {
    let mut b = Model::builder();
    let z = b.latent("z", 8, Prior::standard_normal()).unwrap();
    let a = b.param("A", &[2, 8], Prior::standard_normal()).unwrap();
    let bb = b.param("B", &[128, 8], Prior::standard_normal()).unwrap();
    let label = b.linear(a, z).unwrap();
    let flux = b.linear(bb, z).unwrap();
    b.observe("label", label, None).unwrap();
    b.observe("flux", flux, None).unwrap();
    b.build().unwrap()
}

/// Loads the reference library's starting point.
pub fn reference_init() -> Params {
    Params::new(read2("pollux_init_latents.npy"))
        .with("A", read2("pollux_init_A_label.npy").into_dyn())
        .with("B", read2("pollux_init_A_flux.npy").into_dyn())
}

/// ½·ln(2π) per observed training element, which the reference's iterative loss omits.
pub const REFERENCE_LOSS_OFFSET: f64 = 122329.09754020603;
