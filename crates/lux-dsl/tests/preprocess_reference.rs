//! The shift and scale fitted on the seed-linear data set agree with the constants of
//! the reference implementation, and transforming then inverting recovers the raw data.

use std::path::{Path, PathBuf};

use lux_dsl::io::read_array;
use lux_dsl::ndarray::{Array1, Axis, Ix1};
use lux_dsl::{Dataset, ShiftScale};

/// Returns the seed-linear directory: `$LUX_SHARED_DATA/seed-linear` when the variable is set,
/// otherwise the `shared/data` folder beside the repository.
fn seed_linear() -> PathBuf {
    let root = match std::env::var_os("LUX_SHARED_DATA") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"),
    };
    let dir = root.join("seed-linear");
    assert!(
        dir.join("flux.npy").is_file(),
        "reference data not found in {}: set LUX_SHARED_DATA to the folder that holds seed-linear/",
        dir.display()
    );
    dir
}

fn assert_close(found: f64, expected: f64, tolerance: f64, context: &str) {
    assert!(
        (found - expected).abs() <= tolerance * expected.abs(),
        "{context}: found {found:e}, expected {expected:e}"
    );
}

#[test]
fn reference_constants_match() {
    let dir = seed_linear();
    let data = Dataset::from_npy_files(&dir, &["flux", "label"]).unwrap();
    let scaler = ShiftScale::fit(&data).unwrap();

    for output in ["flux", "label"] {
        let shift: Array1<f64> =
            read_array::<Ix1>(&dir.join(format!("{output}_shift.npy"))).unwrap();
        let scale: Array1<f64> =
            read_array::<Ix1>(&dir.join(format!("{output}_scale.npy"))).unwrap();
        let fitted_shift = scaler.shift(output).unwrap();
        let fitted_scale = scaler.scale(output).unwrap();
        assert_eq!(fitted_shift.len(), shift.len(), "{output}");

        for j in 0..shift.len() {
            assert_close(
                fitted_shift[j],
                shift[j],
                1e-12,
                &format!("{output} shift column {j}"),
            );
            assert_close(
                fitted_scale[j],
                scale[j],
                1e-12,
                &format!("{output} scale column {j}"),
            );
        }
    }
}

#[test]
fn reference_round_trip() {
    let data = Dataset::from_npy_files(&seed_linear(), &["flux", "label"]).unwrap();
    let scaler = ShiftScale::fit(&data).unwrap();
    let standard = scaler.transform(&data).unwrap();

    for (output, raw) in data.outputs() {
        let scaled = standard.require(output).unwrap();
        let n = raw.n_objects() as f64;

        let means = scaled.values().sum_axis(Axis(0)) / n;
        let variances = scaled.values().mapv(|v| v * v).sum_axis(Axis(0)) / n;
        for j in 0..raw.size() {
            assert!(
                means[j].abs() < 1e-12,
                "{output} column {j}: mean {}",
                means[j]
            );
            assert_close(
                variances[j],
                1.0,
                1e-12,
                &format!("{output} column {j} variance"),
            );
        }

        let values = scaler
            .inverse_values(output, scaled.values().view())
            .unwrap();
        let errors = scaler
            .inverse_errors(output, scaled.errors().view())
            .unwrap();
        for ((&v, &r), &s) in values.iter().zip(raw.values()).zip(
            scaler
                .scale(output)
                .unwrap()
                .broadcast(raw.values().dim())
                .unwrap(),
        ) {
            assert!(
                (v - r).abs() <= 1e-13 * (r.abs() + s),
                "{output}: {v} != {r}"
            );
        }
        for (&e, &r) in errors.iter().zip(&raw.errors()) {
            assert_close(e, r, 1e-13, output);
        }
    }
}
