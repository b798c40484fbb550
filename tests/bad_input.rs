//! How lux rejects bad input: every error has the right variant, names the output or
//! parameter and the sizes or value involved, and says what to do next. No fit returns a
//! non-finite loss as a success, and no failed write leaves a half-written file.

use std::fs;
use std::path::PathBuf;

use lux::dsl::ndarray::{Array2, ArrayD, IxDyn};
use lux::dsl::simulate::linear_tutorial;
use lux::dsl::{DataError, Dataset, Model, Params, Prior};
use lux::infer::{Adam, BlockWls, Engine, FitError, FitOptions, FitStatus};

const N: usize = 120;
const K: usize = 4;
const L: usize = 2;
const P: usize = 20;

/// Builds `label = A z` and `flux = B z` (with a fitted scatter when `scatter`), with
/// the given priors on `z` and on `B`.
fn lux_model(k: usize, p: usize, latent_prior: Prior, flux_prior: Prior, scatter: bool) -> Model {
    let mut b = Model::builder();
    let z = b.latent("z", k, latent_prior).unwrap();
    let a = b.param("A", &[L, k], Prior::standard_normal()).unwrap();
    let bb = b.param("B", &[p, k], flux_prior).unwrap();
    let s = scatter.then(|| b.param("s", &[p], Prior::half_normal(1.0)).unwrap());
    let label = b.linear(a, z).unwrap();
    let flux = b.linear(bb, z).unwrap();
    b.observe("label", label, None).unwrap();
    b.observe("flux", flux, s).unwrap();
    b.build().unwrap()
}

fn standard_model() -> Model {
    lux_model(
        K,
        P,
        Prior::standard_normal(),
        Prior::standard_normal(),
        false,
    )
}

fn simulated(n: usize, k: usize, seed: u64) -> Dataset {
    linear_tutorial(n, k, L, P, seed).unwrap().data
}

/// Both engines, with short runs: every case here fails before or during the first cycles.
fn engines() -> Vec<Box<dyn Engine>> {
    vec![
        Box::new(Adam::new(1e-2, 20)),
        Box::new(BlockWls::new(5, 1e-6)),
    ]
}

/// Asserts that `message` contains every one of `parts`.
fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "`{part}` missing from: {message}");
    }
}

fn fit_error(engine: &dyn Engine, model: &Model, data: &Dataset, options: &FitOptions) -> FitError {
    match engine.fit(model, data, options) {
        Ok(fit) => panic!("{} accepted bad input (loss {})", engine.name(), fit.loss),
        Err(err) => err,
    }
}

/// Creates a fresh, empty directory under the system's temporary directory.
fn scratch_dir(case: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lux-bad-input-{case}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

// ---------------------------------------------------------------------------------
// Shapes and sizes

#[test]
fn errors_shape_differs() {
    let err = Dataset::new()
        .with_errors("flux", Array2::zeros((5, 4)), Array2::ones((5, 3)))
        .unwrap_err();
    assert!(
        matches!(&err, DataError::Shape { output, found, expected, .. }
        if output == "flux" && found == &[5, 3] && expected == &[5, 4])
    );
    assert_mentions(
        &err.to_string(),
        &["`flux`", "[5, 3]", "[5, 4]", "must have the same shape"],
    );

    let err = Dataset::new()
        .with_ivar("label", Array2::zeros((5, 2)), Array2::ones((6, 2)))
        .unwrap_err();
    assert!(
        matches!(&err, DataError::Shape { output, found, expected, .. }
        if output == "label" && found == &[6, 2] && expected == &[5, 2])
    );
    assert_mentions(
        &err.to_string(),
        &["`label`", "inverse variances", "[6, 2]", "[5, 2]"],
    );
}

#[test]
fn star_counts_differ() {
    let err = Dataset::new()
        .with_errors("label", Array2::zeros((30, L)), Array2::ones((30, L)))
        .unwrap()
        .with_errors("flux", Array2::zeros((29, P)), Array2::ones((29, P)))
        .unwrap_err();
    assert!(
        matches!(&err, DataError::ObjectCount { output, found: 29, expected: 30 } if output == "flux")
    );
    assert_mentions(
        &err.to_string(),
        &["`flux`", "29", "30", "one row per object"],
    );
}

#[test]
fn output_size_differs_from_model() {
    let model = lux_model(
        K,
        P + 1,
        Prior::standard_normal(),
        Prior::standard_normal(),
        false,
    );
    let data = simulated(N, K, 1);
    for engine in engines() {
        let err = fit_error(engine.as_ref(), &model, &data, &FitOptions::default());
        assert!(
            matches!(&err, FitError::Data(DataError::Shape { output, found, expected, .. })
                if output == "flux" && found == &[N, P] && expected == &[N, P + 1]),
            "{}: {err:?}",
            engine.name()
        );
        assert_mentions(
            &err.to_string(),
            &[
                "`flux`",
                &format!("[{N}, {P}]"),
                &format!("[{N}, {}]", P + 1),
                "build the model",
            ],
        );
    }
}

#[test]
fn init_matrix_latent_size() {
    let k = 8;
    let model = lux_model(
        k,
        P,
        Prior::standard_normal(),
        Prior::standard_normal(),
        false,
    );
    let data = simulated(N, k, 2);
    let init = model
        .sample_params(N, 3)
        .with("A", ArrayD::zeros(IxDyn(&[L, k - 1])));
    for engine in engines() {
        let err = fit_error(
            engine.as_ref(),
            &model,
            &data,
            &FitOptions::from_init(init.clone()),
        );
        assert!(
            matches!(&err, FitError::Data(DataError::ParamShape { name, found, expected, .. })
                if name == "A" && found == &[L, k - 1] && expected == &[L, k]),
            "{}: {err:?}",
            engine.name()
        );
        assert_mentions(
            &err.to_string(),
            &["`A`", "[2, 7]", "[2, 8]", "latent size"],
        );
    }
}

#[test]
fn init_latent_rows() {
    let model = standard_model();
    let data = simulated(N, K, 4);
    let mut init = model.sample_params(N, 5);
    init.set_latents(Array2::zeros((N - 1, K)));
    for engine in engines() {
        let err = fit_error(
            engine.as_ref(),
            &model,
            &data,
            &FitOptions::from_init(init.clone()),
        );
        assert!(
            matches!(&err, FitError::Data(DataError::LatentShape { found, expected, .. })
                if found == &[N - 1, K] && expected == &[N, K]),
            "{}: {err:?}",
            engine.name()
        );
        assert_mentions(
            &err.to_string(),
            &[
                "latents",
                &format!("[{}, {K}]", N - 1),
                &format!("[{N}, {K}]"),
                "one row per object",
            ],
        );
    }
}

#[test]
fn init_latent_columns() {
    let model = standard_model();
    let data = simulated(N, K, 4);
    let mut init = model.sample_params(N, 5);
    init.set_latents(Array2::zeros((N, K + 1)));
    for engine in engines() {
        let err = fit_error(
            engine.as_ref(),
            &model,
            &data,
            &FitOptions::from_init(init.clone()),
        );
        assert!(
            matches!(&err, FitError::Data(DataError::LatentShape { found, expected, .. })
                if found == &[N, K + 1] && expected == &[N, K]),
            "{}: {err:?}",
            engine.name()
        );
        assert_mentions(
            &err.to_string(),
            &[
                "latents",
                &format!("[{N}, {}]", K + 1),
                &format!("[{N}, {K}]"),
                "K = 4",
            ],
        );
    }
}

#[test]
fn init_nan_parameter() {
    let model = standard_model();
    let data = simulated(N, K, 6);
    let mut init = model.sample_params(N, 7);
    init.get_mut("B").unwrap()[[3, 2]] = f64::NAN;
    for engine in engines() {
        let err = fit_error(
            engine.as_ref(),
            &model,
            &data,
            &FitOptions::from_init(init.clone()),
        );
        assert!(
            matches!(&err, FitError::Data(DataError::NonFiniteParameter { name, index, element, value })
                if name == "B" && *index == 3 * K + 2 && element == &[3, 2] && value.is_nan()),
            "{}: {err:?}",
            engine.name()
        );
        assert_mentions(&err.to_string(), &["`B`", "NaN", "[3, 2]", "finite"]);
    }

    let mut init = model.sample_params(N, 7);
    init.latents_mut()[[10, 1]] = f64::NEG_INFINITY;
    let err = fit_error(
        &BlockWls::default(),
        &model,
        &data,
        &FitOptions::from_init(init),
    );
    assert!(
        matches!(&err, FitError::Data(DataError::NonFiniteParameter { name, index, .. })
        if name == "latents" && *index == 10 * K + 1)
    );
    assert_mentions(&err.to_string(), &["latents", "-inf", "[10, 1]"]);
}

#[test]
fn init_negative_scatter() {
    let model = lux_model(
        K,
        P,
        Prior::standard_normal(),
        Prior::standard_normal(),
        true,
    );
    let data = simulated(N, K, 7);
    let mut init = model.sample_params(N, 8);
    init.get_mut("s").unwrap()[[6]] = -0.25;
    for engine in engines() {
        let err = fit_error(
            engine.as_ref(),
            &model,
            &data,
            &FitOptions::from_init(init.clone()),
        );
        assert!(
            matches!(&err, FitError::Data(DataError::NegativeParameter { name, element, value })
                if name == "s" && element == &[6] && *value == -0.25),
            "{}: {err:?}",
            engine.name()
        );
        assert_mentions(
            &err.to_string(),
            &["`s`", "-0.25", "[6]", "HalfNormal", "≥ 0"],
        );
    }
}

#[test]
fn empty_dataset() {
    let model = standard_model();
    let no_rows = Dataset::new()
        .with_errors("flux", Array2::zeros((0, P)), Array2::ones((0, P)))
        .unwrap();
    let unrelated = Dataset::new()
        .with_errors("teff", Array2::zeros((N, 1)), Array2::ones((N, 1)))
        .unwrap();
    for engine in engines() {
        for data in [Dataset::new(), no_rows.clone()] {
            let err = fit_error(engine.as_ref(), &model, &data, &FitOptions::default());
            assert!(
                matches!(&err, FitError::Data(DataError::Empty { .. })),
                "{}: {err:?}",
                engine.name()
            );
            assert_mentions(&err.to_string(), &["no objects", "at least one row"]);
        }
        let err = fit_error(engine.as_ref(), &model, &unrelated, &FitOptions::default());
        assert!(
            matches!(&err, FitError::Data(DataError::NotAnOutput { .. })),
            "{}: {err:?}",
            engine.name()
        );
        assert_mentions(&err.to_string(), &["`teff`", "label, flux", "with_only"]);
    }
}

// ---------------------------------------------------------------------------------
// Names and settings

#[test]
fn fixed_unknown_name() {
    let model = standard_model();
    let data = simulated(N, K, 8);
    let options = FitOptions::default().fix("A").fix("C");
    for engine in engines() {
        let err = fit_error(engine.as_ref(), &model, &data, &options);
        assert!(
            matches!(&err, FitError::UnknownParameter { name, available } if name == "C" && available == "A, B"),
            "{}: {err:?}",
            engine.name()
        );
        assert_mentions(&err.to_string(), &["`C`", "A, B"]);
    }
}

#[test]
fn only_unknown_block() {
    let model = standard_model();
    let data = simulated(N, K, 9);
    let err = fit_error(
        &BlockWls::default().only(&["latents", "flux"]),
        &model,
        &data,
        &FitOptions::default(),
    );
    assert!(
        matches!(&err, FitError::UnknownBlock { name, .. } if name == "flux"),
        "{err:?}"
    );
    assert_mentions(
        &err.to_string(),
        &["`flux`", "latents, label:mean, flux:mean"],
    );
}

#[test]
fn engine_settings() {
    let model = standard_model();
    let data = simulated(N, K, 10);
    let options = FitOptions::default();

    for rate in [0.0, -1e-3, f64::NAN, f64::INFINITY] {
        let err = fit_error(&Adam::new(rate, 10), &model, &data, &options);
        assert!(
            matches!(&err, FitError::InvalidSetting { setting: "learning_rate", value, .. } if value == &rate.to_string()),
            "{err:?}"
        );
        assert_mentions(
            &err.to_string(),
            &["learning_rate", &rate.to_string(), "> 0"],
        );
    }
    for (beta1, beta2) in [(1.0, 0.999), (0.9, f64::NAN)] {
        let adam = Adam {
            beta1,
            beta2,
            ..Adam::default()
        };
        let err = fit_error(&adam, &model, &data, &options);
        assert!(
            matches!(
                err,
                FitError::InvalidSetting {
                    setting: "beta1/beta2",
                    ..
                }
            ),
            "{err:?}"
        );
    }
    for epsilon in [0.0, -1e-8, f64::NAN] {
        let adam = Adam {
            epsilon,
            ..Adam::default()
        };
        let err = fit_error(&adam, &model, &data, &options);
        assert!(
            matches!(
                err,
                FitError::InvalidSetting {
                    setting: "epsilon",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    for tol in [f64::NAN, -1.0, f64::INFINITY] {
        let err = fit_error(&BlockWls::new(10, tol), &model, &data, &options);
        assert!(
            matches!(err, FitError::InvalidSetting { setting: "tol", .. }),
            "{err:?}"
        );
        assert_mentions(&err.to_string(), &["tol", &tol.to_string(), "≥ 0"]);
    }
    let err = fit_error(&BlockWls::new(0, 1e-6), &model, &data, &options);
    assert!(
        matches!(
            err,
            FitError::InvalidSetting {
                setting: "max_cycles",
                ..
            }
        ),
        "{err:?}"
    );
    assert_mentions(&err.to_string(), &["max_cycles", "0", "at least one cycle"]);
}

// ---------------------------------------------------------------------------------
// Singular systems

/// Returns `data` with every measurement of object `row` missing.
fn without_object(data: &Dataset, row: usize) -> Dataset {
    let mut out = Dataset::new();
    for (name, output) in data.outputs() {
        let mut errors = output.errors();
        errors.row_mut(row).fill(f64::INFINITY);
        out = out
            .with_errors(name, output.values().clone(), errors)
            .unwrap();
    }
    out
}

#[test]
fn flat_latents_empty_object() {
    let model = lux_model(K, P, Prior::Flat, Prior::standard_normal(), false);
    let data = without_object(&simulated(N, K, 11), 17);
    for engine in engines() {
        let err = fit_error(engine.as_ref(), &model, &data, &FitOptions::default());
        assert!(
            matches!(&err, FitError::Data(DataError::UnconstrainedObjects { latent, rows }) if latent == "z" && rows == &[17]),
            "{}: {err:?}",
            engine.name()
        );
        assert_mentions(
            &err.to_string(),
            &["rows [17]", "`z`", "flat prior", "Normal prior"],
        );
    }

    // With a Normal prior the same object is well defined: its latents are the prior mean.
    let model = standard_model();
    let fit = BlockWls::new(30, 1e-8)
        .fit(&model, &data, &FitOptions::default())
        .unwrap();
    assert!(
        fit.latents().row(17).iter().all(|&z| z.abs() < 1e-12),
        "{:?}",
        fit.latents().row(17)
    );
}

#[test]
fn flat_matrix_empty_pixel() {
    let model = lux_model(K, P, Prior::standard_normal(), Prior::Flat, false);
    let data = simulated(N, K, 12);
    let flux = data.require("flux").unwrap();
    let mut errors = flux.errors();
    errors.column_mut(7).fill(f64::INFINITY);
    let data = data
        .without("flux")
        .unwrap()
        .with_errors("flux", flux.values().clone(), errors)
        .unwrap();

    // Both engines reject the fit before starting, naming the column and the parameter.
    for engine in engines() {
        let err = fit_error(engine.as_ref(), &model, &data, &FitOptions::default());
        assert!(
            matches!(&err, FitError::Data(DataError::UnconstrainedColumns { output, param, columns }) if output == "flux" && param == "B" && columns == &[7]),
            "{}: {err:?}",
            engine.name()
        );
        assert_mentions(
            &err.to_string(),
            &["`flux`", "columns [7]", "`B`", "Normal prior"],
        );
    }
}

// ---------------------------------------------------------------------------------
// Non-finite losses

/// Fails unless `result` is a fit with a finite loss and finite parameters; returns
/// whether the fit reported that it diverged.
fn finite_or_reported(result: Result<lux::infer::Fit, FitError>, case: &str) -> bool {
    let fit = match result {
        Ok(fit) => fit,
        Err(err) => panic!("{case}: unexpected error {err:?}"),
    };
    assert!(
        fit.loss.is_finite(),
        "{case}: {} returned loss {}",
        fit.engine,
        fit.loss
    );
    assert!(
        fit.loss_history.iter().all(|l| l.is_finite()),
        "{case}: non-finite loss in the history"
    );
    assert!(
        fit.latents().iter().all(|x| x.is_finite()),
        "{case}: non-finite latents"
    );
    for (name, value) in fit.params.globals() {
        assert!(
            value.iter().all(|x| x.is_finite()),
            "{case}: non-finite `{name}`"
        );
    }
    match &fit.status {
        FitStatus::Diverged { iteration, quantity } => {
            assert!(*iteration <= fit.iterations, "{case}: diverged at {iteration} of {}", fit.iterations);
            assert!(!quantity.is_empty(), "{case}");
            assert!(!fit.converged(), "{case}");
            true
        }
        _ => false,
    }
}

#[test]
fn adam_huge_learning_rate() {
    let data = simulated(60, K, 13);
    let plain = standard_model();
    let scattered = lux_model(
        K,
        P,
        Prior::standard_normal(),
        Prior::standard_normal(),
        true,
    );
    let mut reported = 0;
    for model in [&plain, &scattered] {
        for rate in [1e6, 1e100, 1e300] {
            for steps in [1, 2, 50] {
                let result = Adam::new(rate, steps).fit(model, &data, &FitOptions::default());
                let case = format!(
                    "rate {rate:e}, {steps} steps, {} parameters",
                    model.params().len()
                );
                reported += usize::from(finite_or_reported(result, &case));
            }
        }
    }
    // The largest rates must overflow somewhere: the check above saw real failures.
    assert!(reported > 0);
}

/// Returns `data` with flux elements [3, 5] and [40, 11] set to `+extreme` and `−extreme`.
fn with_extremes(data: &Dataset, extreme: f64) -> Result<Dataset, DataError> {
    let flux = data.require("flux").unwrap();
    let mut values = flux.values().clone();
    values[[3, 5]] = extreme;
    values[[40, 11]] = -extreme;
    data.without("flux")
        .unwrap()
        .with_errors("flux", values, flux.errors())
}

#[test]
fn wls_extreme_values() {
    let model = standard_model();
    let data = simulated(N, K, 14);

    // Values whose squared residual overflows are rejected when the data set is built.
    for extreme in [1e160, 1e300, f64::MAX] {
        let err = with_extremes(&data, extreme).unwrap_err();
        assert!(
            matches!(&err, DataError::ExtremeValue { output, element: [3, 5], value, .. } if output == "flux" && *value == extreme),
            "{err:?}"
        );
        assert_mentions(
            &err.to_string(),
            &["`flux`", "[3, 5]", &format!("{extreme:e}"), "rescale"],
        );
    }

    // Smaller outliers (sentinels) are representable: a fit either runs to a finite
    // loss, or stops with an error that points at extreme values.
    for extreme in [1e10, 1e30, 1e150] {
        let bad = with_extremes(&data, extreme).unwrap();
        let case = format!("value {extreme:e}");
        match BlockWls::new(20, 1e-6).fit(&model, &bad, &FitOptions::default()) {
            Err(err @ FitError::Singular { .. }) => {
                assert_mentions(&err.to_string(), &["extreme values"])
            }
            result => {
                finite_or_reported(result, &case);
            }
        }
        finite_or_reported(
            Adam::new(1e-2, 100).fit(&model, &bad, &FitOptions::default()),
            &case,
        );
    }
}

#[test]
fn wls_tiny_errors() {
    // Errors so small that 1/σ² overflows are treated as missing, as an infinite
    // inverse variance is: neither may reach the loss as an infinite weight.
    let model = standard_model();
    let data = simulated(N, K, 15);
    let flux = data.require("flux").unwrap();
    let mut errors = flux.errors();
    errors[[3, 5]] = 1e-200;
    let bad = data
        .without("flux")
        .unwrap()
        .with_errors("flux", flux.values().clone(), errors)
        .unwrap();
    assert_eq!(bad.require("flux").unwrap().ivar()[[3, 5]], 0.0);
    let fit = BlockWls::new(20, 1e-6).fit(&model, &bad, &FitOptions::default());
    finite_or_reported(fit, "error 1e-200");
}

// ---------------------------------------------------------------------------------
// Writes

#[test]
fn npz_missing_directory() {
    let dir = scratch_dir("missing");
    let target = dir.join("absent").join("data.npz");
    let data = simulated(10, K, 16);
    let err = data.write_npz(&target).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err:?}");
    assert_mentions(&err.to_string(), &["absent"]);
    assert!(!target.exists());
    assert!(!dir.join("absent").exists());
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn npz_failed_overwrite_keeps_old() {
    let dir = scratch_dir("overwrite");
    let target = dir.join("data.npz");
    let good = simulated(10, K, 17);
    good.write_npz(&target).unwrap();
    let before = fs::read(&target).unwrap();

    // An output name the format cannot hold: rejected before anything is written.
    let clash = Dataset::new()
        .with_errors("flux_ivar", Array2::zeros((3, 2)), Array2::ones((3, 2)))
        .unwrap();
    let err = clash.write_npz(&target).unwrap_err();
    assert_mentions(&err.to_string(), &["flux_ivar", "rename"]);
    assert_eq!(fs::read(&target).unwrap(), before);
    assert_eq!(Dataset::read_npz(&target).unwrap(), good);

    // Parameters whose write fails the same way.
    let params_path = dir.join("params.npz");
    let params = Params::new(Array2::ones((3, 2))).with("B", ArrayD::ones(IxDyn(&[4, 2])));
    params.write_npz(&params_path).unwrap();
    let bad = params.clone().with("latents", ArrayD::zeros(IxDyn(&[1])));
    assert!(bad.write_npz(&params_path).is_err());
    assert_eq!(Params::read_npz(&params_path).unwrap(), params);

    // A complete archive that cannot be moved into place (the target is a directory)
    // leaves neither the target changed nor a temporary file behind.
    let blocked = dir.join("blocked.npz");
    fs::create_dir(&blocked).unwrap();
    fs::write(blocked.join("keep"), b"x").unwrap();
    assert!(good.write_npz(&blocked).is_err());
    assert!(blocked.is_dir());
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["blocked.npz", "data.npz", "params.npz"]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fixed_parameter_needs_a_value() {
    let model = standard_model();
    let data = simulated(N, K, 8);
    for engine in engines() {
        let err = fit_error(engine.as_ref(), &model, &data, &FitOptions::default().fix("A"));
        assert!(
            matches!(&err, FitError::FixedWithoutValue { name } if name == "A"),
            "{}: {err:?}",
            engine.name()
        );
        assert_mentions(&err.to_string(), &["`A`", "FitOptions::from_init"]);
    }
}

#[test]
fn absent_output_is_a_warning() {
    // Training without labels cannot move the label map, and the fit warns about it.
    let model = standard_model();
    let data = simulated(N, K, 8).with_only(&["flux"]).unwrap();
    for engine in engines() {
        let fit = engine.fit(&model, &data, &FitOptions::default()).unwrap();
        assert_eq!(fit.warnings.len(), 1, "{}: {:?}", engine.name(), fit.warnings);
        assert_mentions(&fit.warnings[0], &["`label`", "absent", "`A`"]);
    }
}

#[test]
fn fixed_latent_points_to_fix_latents() {
    let model = standard_model();
    let data = simulated(N, K, 8);
    for engine in engines() {
        let err = fit_error(engine.as_ref(), &model, &data, &FitOptions::default().fix("z"));
        assert!(
            matches!(&err, FitError::LatentInFixedSet { name } if name == "z"),
            "{}: {err:?}",
            engine.name()
        );
        assert_mentions(&err.to_string(), &["`z`", "fix_latents"]);
    }
}
