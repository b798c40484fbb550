//! `.npy` and `.npz` round trips of data sets, parameters and scalers, and reading the
//! seed-linear directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lux_dsl::io::{read_array, write_array};
use lux_dsl::ndarray::{Array2, ArrayD, Ix1, Ix2, IxDyn, arr0, array};
use lux_dsl::{DataError, Dataset, Params, ShiftScale};

/// A fresh directory under the system temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("lux-io-{test}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Names of the files in the directory, sorted.
    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

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

#[test]
fn dataset_npz_round_trip() {
    let tmp = TempDir::new("dataset");
    let path = tmp.join("data.npz");
    let data = Dataset::new()
        .with_errors(
            "flux",
            array![[1.0, f64::NAN, 3.0], [4.0, 5.0, 6.0]],
            array![[0.5, 1.0, 2.0], [1.0, 0.1, 0.0]],
        )
        .unwrap()
        .with_ivar("label", array![[7.0], [8.0]], array![[4.0], [0.25]])
        .unwrap();

    data.write_npz(&path).unwrap();
    let back = Dataset::read_npz(&path).unwrap();

    assert_eq!(back, data);
    let flux = back.require("flux").unwrap();
    assert_eq!(flux.ivar()[[0, 1]], 0.0);
    assert_eq!(flux.ivar()[[1, 2]], 0.0);
    assert_eq!(flux.n_observed(), 4);
    assert_eq!(tmp.files(), ["data.npz"]);
}

#[test]
fn dataset_npz_overwrite() {
    let tmp = TempDir::new("overwrite");
    let path = tmp.join("data.npz");
    let first = Dataset::new()
        .with_ivar("flux", array![[1.0]], array![[1.0]])
        .unwrap();
    let second = Dataset::new()
        .with_ivar("label", array![[2.0], [3.0]], array![[1.0], [2.0]])
        .unwrap();

    first.write_npz(&path).unwrap();
    second.write_npz(&path).unwrap();

    assert_eq!(Dataset::read_npz(&path).unwrap(), second);
    assert_eq!(tmp.files(), ["data.npz"]);
}

#[test]
fn dataset_npz_unpaired_array() {
    let tmp = TempDir::new("unpaired");
    let path = tmp.join("params.npz");
    Params::new(Array2::zeros((2, 1))).write_npz(&path).unwrap();

    let err = Dataset::read_npz(&path).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, DataError::Npy { .. }), "{message}");
    assert!(
        message.contains("latents_ivar") && message.contains("params.npz"),
        "{message}"
    );
}

#[test]
fn params_npz_round_trip() {
    let tmp = TempDir::new("params");
    let path = tmp.join("params.npz");
    let params = Params::new(array![[1.0, -2.0], [3.5, 4.0], [0.0, 1e-300]])
        .with(
            "A_flux",
            array![[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]].into_dyn(),
        )
        .with("bias", array![0.5, -0.5, 0.25].into_dyn())
        .with("scatter", arr0(0.125).into_dyn());

    params.write_npz(&path).unwrap();
    let back = Params::read_npz(&path).unwrap();

    assert_eq!(back, params);
    assert_eq!(back.get("scatter").unwrap().ndim(), 0);
    assert_eq!(
        back.globals().map(|(n, _)| n).collect::<Vec<_>>(),
        ["A_flux", "bias", "scatter"]
    );
}

#[test]
fn params_latents_dims_checked() {
    let tmp = TempDir::new("dims");
    let path = tmp.join("params.npz");
    let mut params = Params::new(Array2::zeros((1, 1)));
    params.insert("latents", ArrayD::zeros(IxDyn(&[3])));
    assert!(params.write_npz(&path).is_err());
    assert!(!path.exists());

    let latents_1d = tmp.join("latents.npy");
    write_array(&latents_1d, &array![1.0, 2.0, 3.0]).unwrap();
    let err = read_array::<Ix2>(&latents_1d).unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, DataError::ArrayDims { found: ref f, expected: 2, .. } if f == &[3]),
        "{message}"
    );
    assert!(message.contains("latents.npy"), "{message}");
}

#[test]
fn shift_scale_npz_round_trip() {
    let tmp = TempDir::new("scaler");
    let path = tmp.join("scaler.npz");
    let scaler = ShiftScale::from_parts(BTreeMap::from([
        (
            "flux".to_string(),
            (array![1.0, -2.0, 3.0], array![0.5, 2.0, 1e-3]),
        ),
        ("label".to_string(), (array![5000.0], array![250.0])),
    ]))
    .unwrap();

    scaler.write_npz(&path).unwrap();
    let back = ShiftScale::read_npz(&path).unwrap();

    assert_eq!(back, scaler);
    assert_eq!(back.scale("flux").unwrap()[2], 1e-3);
}

#[test]
fn npy_round_trip() {
    let tmp = TempDir::new("npy");
    let path = tmp.join("a.npy");
    let a = array![[1.0, 2.0, 3.0], [4.0, 5.0, f64::INFINITY]];

    write_array(&path, &a.t()).unwrap();
    assert_eq!(read_array::<Ix2>(&path).unwrap(), a.t());
    assert_eq!(read_array::<IxDyn>(&path).unwrap().shape(), [3, 2]);
    assert!(matches!(
        read_array::<Ix1>(&tmp.join("missing.npy")),
        Err(DataError::Io { .. })
    ));
}

#[test]
fn npy_files_ivar_fallback() {
    let tmp = TempDir::new("ivar");
    write_array(&tmp.join("flux.npy"), &array![[1.0, 2.0]]).unwrap();
    write_array(&tmp.join("flux_ivar.npy"), &array![[4.0, 0.0]]).unwrap();
    write_array(&tmp.join("label.npy"), &array![[3.0]]).unwrap();

    let data = Dataset::from_npy_files(&tmp.0, &["flux"]).unwrap();
    assert_eq!(
        data.require("flux").unwrap().errors(),
        array![[0.5, f64::INFINITY]]
    );

    let err = Dataset::from_npy_files(&tmp.0, &["label"]).unwrap_err();
    assert!(err.to_string().contains("label_err.npy"), "{err}");
}

#[test]
fn npy_files_seed_linear() {
    let dir = seed_linear();
    let data = Dataset::from_npy_files(&dir, &["flux", "label"]).unwrap();
    let flux = data.require("flux").unwrap();
    let label = data.require("label").unwrap();

    assert_eq!(flux.values().dim(), (2048, 128));
    assert_eq!(label.values().dim(), (2048, 2));
    assert_eq!(flux.n_observed(), 2048 * 128);

    let raw: Array2<f64> = ndarray_npy::read_npy(dir.join("flux.npy")).unwrap();
    let raw_err: Array2<f64> = ndarray_npy::read_npy(dir.join("flux_err.npy")).unwrap();
    assert_eq!(flux.values(), &raw);
    assert_eq!(flux.ivar(), &raw_err.mapv(|e| 1.0 / (e * e)));
    let raw: Array2<f64> = ndarray_npy::read_npy(dir.join("label.npy")).unwrap();
    assert_eq!(label.values(), &raw);
}
