//! Messy survey data: bad elements, dead columns and stars, unusable errors, test
//! stars without labels, intrinsic scatter, latent uncertainties and divergence.
//!
//! Every data set is simulated here from the tutorial's linear model, so each check
//! compares with a known truth or with a second fit that must agree with the first.

use lux::dsl::ndarray::{Array1, Array2, Axis, s};
use lux::dsl::preprocess::ShiftScale;
use lux::dsl::simulate::{LinearSimulation, linear_tutorial};
use lux::dsl::{ColumnProblem, DataError, Dataset, Params};
use lux::infer::{
    Adam, BlockWls, CovarianceMethod, Engine, FitError, FitOptions, FitStatus, latent_covariance, map_covariance,
    predict_with_uncertainty,
};
use lux::infer::uncertainty::laplace_latent_covariance;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

const K: usize = 8;
const L: usize = 2;
const P: usize = 128;

lux::lux_model! {
    /// The tutorial's Lux model.
    model Lux(latents: K, labels: L, pixels: P) {
        latent z: [K] ~ Normal(0.0, 1.0);
        param A: [L, K] ~ Normal(0.0, 1.0);
        param B: [P, K] ~ Normal(0.0, 1.0);
        observe label: [L] ~ Normal(A * z, err);
        observe flux: [P] ~ Normal(B * z, err);
    }

    /// Lux with a fitted intrinsic scatter per pixel.
    model LuxScatter(latents: K, labels: L, pixels: P) {
        latent z: [K] ~ Normal(0.0, 1.0);
        param A: [L, K] ~ Normal(0.0, 1.0);
        param B: [P, K] ~ Normal(0.0, 1.0);
        param s: [P] ~ HalfNormal(1.0);
        observe label: [L] ~ Normal(A * z, err);
        observe flux: [P] ~ Normal(B * z, hypot(err, s));
    }
}

fn simulate(n: usize, seed: u64) -> LinearSimulation {
    linear_tutorial(n, K, L, P, seed).expect("simulation")
}

fn lux(pixels: usize) -> Lux {
    Lux::new(K, L, pixels).expect("model")
}

/// Returns `data` with output `name` replaced by `values` and `errors`.
fn replace(data: &Dataset, name: &str, values: Array2<f64>, errors: Array2<f64>) -> Dataset {
    data.without(name).unwrap().with_errors(name, values, errors).unwrap()
}

fn max_abs_diff(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    (a - b).iter().fold(0.0, |m: f64, x| m.max(x.abs()))
}

fn rmse(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    ((a - b).mapv(|x| x * x).mean().unwrap()).sqrt()
}

fn correlation(a: &Array1<f64>, b: &Array1<f64>) -> f64 {
    let (ma, mb) = (a.mean().unwrap(), b.mean().unwrap());
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

/// Predicted labels of flux-only `test` stars from the trained globals.
fn infer_labels(model: &lux::dsl::Model, trained: &Params, test: &Dataset) -> (Params, Array2<f64>) {
    let options = FitOptions::infer_latents(model, trained, test.n_objects());
    let fit = BlockWls::default().fit(model, test, &options).expect("inference");
    let labels = model.predict(&fit.params).unwrap()["label"].clone();
    (fit.params, labels)
}

#[test]
fn bad_elements_equal_zero_weight() {
    let sim = simulate(300, 1);
    let flux = sim.data.require("flux").unwrap();
    let mut values = flux.values().clone();
    let mut errors = flux.errors();
    values[[3, 5]] = f64::NAN;
    values[[10, 7]] = f64::INFINITY;
    errors[[20, 9]] = -0.05;
    errors[[40, 11]] = f64::INFINITY;
    let messy = replace(&sim.data, "flux", values.clone(), errors.clone());

    // The same data with those four elements given zero weight by hand.
    let mut ivar = errors.mapv(|e| 1.0 / (e * e));
    for element in [[3, 5], [10, 7], [20, 9], [40, 11]] {
        values[element] = 0.0;
        ivar[element] = 0.0;
    }
    let by_hand = sim.data.without("flux").unwrap().with_ivar("flux", values, ivar).unwrap();
    assert_eq!(messy.require("flux").unwrap().n_observed(), 300 * P - 4);

    let model = lux(P);
    let engine = BlockWls::default();
    let a = engine.fit(&model, &messy, &FitOptions::default()).unwrap();
    let b = engine.fit(&model, &by_hand, &FitOptions::default()).unwrap();
    assert!(a.converged());
    assert_eq!(a.iterations, b.iterations);
    assert!((a.loss - b.loss).abs() <= 1e-9 * b.loss.abs(), "{} vs {}", a.loss, b.loss);
    let diff = max_abs_diff(a.latents(), b.latents());
    assert!(diff < 1e-9, "latents differ by {diff:e}");
    assert_eq!(a.coverage.output("flux").unwrap().n_missing, 4);

    let grad = model.loss_and_grad(&a.params, &messy).unwrap();
    assert!(grad.loss.is_finite());
    assert!(grad.latents.iter().all(|g| g.is_finite()));
    assert!(grad.params.iter().all(|(_, g)| g.iter().all(|x| x.is_finite())));
}

#[test]
fn degenerate_columns_named() {
    let sim = simulate(60, 2);
    let flux = sim.data.require("flux").unwrap();
    let mut values = flux.values().clone();
    values.column_mut(4).fill(3.7);
    values.column_mut(9).fill(0.0);
    let data = replace(&sim.data, "flux", values.clone(), flux.errors());
    let err = ShiftScale::fit(&data).unwrap_err();
    let DataError::DegenerateColumns { output, problems } = &err else { panic!("{err:?}") };
    assert_eq!(output, "flux");
    assert_eq!(problems.iter().map(ColumnProblem::column).collect::<Vec<_>>(), [4, 9]);
    let message = err.to_string();
    assert!(message.contains("column 4 is constant (every observed value is 3.7)"), "{message}");
    assert!(message.contains("column 9 is constant"), "{message}");

    // Column 20 varies in 12 of 60 stars only (fewer than a third), 6 above and 6
    // below the rest. Its 16–84 percentile range is zero, so the robust scale fails,
    // but the mean and standard deviation work.
    let mut values = flux.values().clone();
    values.column_mut(20).fill(1.5);
    for star in 0..12 {
        values[[star * 5, 20]] = if star % 2 == 0 { -(star as f64) } else { 10.0 + star as f64 };
    }
    let data = replace(&sim.data, "flux", values, flux.errors());
    let err = ShiftScale::fit_robust(&data).unwrap_err();
    let DataError::DegenerateColumns { problems, .. } = &err else { panic!("{err:?}") };
    assert_eq!(problems, &[ColumnProblem::ZeroPercentileRange { column: 20, value: 1.5 }]);
    assert!(ShiftScale::fit(&data).is_ok());
}

#[test]
fn dead_column_and_star() {
    const DEAD_STAR: usize = 17;
    const DEAD_PIXEL: usize = 30;
    let sim = simulate(200, 3);
    let mut data = Dataset::new();
    for (name, out) in sim.data.outputs() {
        let mut errors = out.errors();
        errors.row_mut(DEAD_STAR).fill(f64::INFINITY);
        if name == "flux" {
            errors.column_mut(DEAD_PIXEL).fill(f64::INFINITY);
        }
        data = data.with_errors(name, out.values().clone(), errors).unwrap();
    }

    // The same data without that star and that pixel.
    let keep_rows: Vec<usize> = (0..200).filter(|&n| n != DEAD_STAR).collect();
    let keep_pixels: Vec<usize> = (0..P).filter(|&p| p != DEAD_PIXEL).collect();
    let reduced = sim.data.select_rows(&keep_rows).unwrap();
    let flux = reduced.require("flux").unwrap();
    let reduced = replace(
        &reduced,
        "flux",
        flux.values().select(Axis(1), &keep_pixels),
        flux.errors().select(Axis(1), &keep_pixels),
    );

    let engine = BlockWls::new(3000, 1e-14);
    let full = engine.fit(&lux(P), &data, &FitOptions::default()).unwrap();
    let small = engine.fit(&lux(P - 1), &reduced, &FitOptions::default()).unwrap();

    assert_eq!(full.coverage.empty_objects, [DEAD_STAR]);
    assert_eq!(full.coverage.output("flux").unwrap().empty_columns, [DEAD_PIXEL]);
    let warnings = full.warnings.join("\n");
    assert!(warnings.contains("rows [17]"), "{warnings}");
    assert!(warnings.contains("columns [30]"), "{warnings}");
    assert!(warnings.contains("from the prior alone"), "{warnings}");

    // The prior alone sets the dead star's latents and the dead pixel's row: zero.
    assert!(full.latents().row(DEAD_STAR).iter().all(|z| z.abs() < 1e-12));
    let b = full.params.matrix("B").unwrap();
    assert!(b.row(DEAD_PIXEL).iter().all(|x| x.abs() < 1e-12));

    // Everything else is the fit without them. Latents are identified only up to a
    // rotation, so compare predictions.
    let predicted = lux(P).predict(&full.params).unwrap();
    let expected = lux(P - 1).predict(&small.params).unwrap();
    let label = predicted["label"].select(Axis(0), &keep_rows);
    let flux = predicted["flux"].select(Axis(0), &keep_rows).select(Axis(1), &keep_pixels);
    let label_diff = max_abs_diff(&label, &expected["label"]);
    let flux_diff = max_abs_diff(&flux, &expected["flux"]);
    assert!(label_diff < 1e-4, "labels differ by {label_diff:e}");
    assert!(flux_diff < 1e-4, "flux differs by {flux_diff:e}");
    // The losses differ by the priors' constants of the star's K latents and the
    // pixel's K map elements, all at the prior mean: ½ ln 2π each.
    let constants = 2.0 * K as f64 * 0.5 * (2.0 * std::f64::consts::PI).ln();
    let gap = full.loss - small.loss - constants;
    assert!(gap.abs() < 1e-6 * small.loss.abs(), "losses {} and {}, gap {gap}", full.loss, small.loss);
}

#[test]
fn zero_errors_rejected_or_masked() {
    let sim = simulate(50, 4);
    let label = sim.data.require("label").unwrap();

    let err = replace_result(&sim.data, "label", label.values().clone(), Array2::zeros((50, L))).unwrap_err();
    assert!(
        matches!(&err, DataError::NoUsableErrors { output, finite_values: 100, zero: 100, .. } if output == "label"),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("`label`"), "{message}");
    assert!(message.contains("100 are zero"), "{message}");

    // Inverse variances all zero are the same mistake.
    let err = sim
        .data
        .without("label")
        .unwrap()
        .with_ivar("label", label.values().clone(), Array2::zeros((50, L)))
        .unwrap_err();
    assert!(matches!(err, DataError::NoUsableErrors { .. }), "{err:?}");

    // One zero among positive errors marks that element missing, and the report counts it.
    let mut errors = label.errors();
    errors[[7, 1]] = 0.0;
    let data = replace(&sim.data, "label", label.values().clone(), errors);
    assert_eq!(data.require("label").unwrap().ivar()[[7, 1]], 0.0);
    let fit = BlockWls::default().fit(&lux(P), &data, &FitOptions::default()).unwrap();
    let coverage = fit.coverage.output("label").unwrap();
    assert_eq!(coverage.n_missing, 1);
    assert_eq!(coverage.n_elements, 100);
}

fn replace_result(data: &Dataset, name: &str, values: Array2<f64>, errors: Array2<f64>) -> Result<Dataset, DataError> {
    data.without(name).unwrap().with_errors(name, values, errors)
}

#[test]
fn test_stars_without_labels() {
    let sim = simulate(600, 5);
    let (train, rest) = sim.data.split_at(300).unwrap();
    let model = lux(P);
    let trained = BlockWls::default().fit(&model, &train, &FitOptions::default()).unwrap();
    assert!(trained.converged());

    let truth = sim.latents.dot(&sim.label_matrix.t());
    for count in [300, 123] {
        let test = rest.select_rows(&(0..count).collect::<Vec<_>>()).unwrap().with_only(&["flux"]).unwrap();
        let (_, labels) = infer_labels(&model, &trained.params, &test);
        let error = rmse(&labels, &truth.slice(s![300..300 + count, ..]).to_owned());
        assert!(error < 0.1, "{count} test stars: label RMSE {error}");

        // Training latents never reach the test stars: poisoning them changes nothing.
        let mut poisoned = trained.params.clone();
        poisoned.latents_mut().fill(1e3);
        let (_, again) = infer_labels(&model, &poisoned, &test);
        assert_eq!(labels, again, "{count} test stars");

        // Labels given as NaN are the same as no labels at all.
        let nan_labels = test
            .clone()
            .with_errors("label", Array2::from_elem((count, L), f64::NAN), Array2::ones((count, L)))
            .unwrap();
        let (_, with_nan) = infer_labels(&model, &trained.params, &nan_labels);
        assert!(max_abs_diff(&labels, &with_nan) < 1e-12, "{count} test stars");
    }
}

#[test]
fn spectrum_length_mismatch_named() {
    let sim = simulate(100, 6);
    let model = lux(P);
    let trained = BlockWls::default().fit(&model, &sim.data, &FitOptions::default()).unwrap();

    let flux = sim.data.require("flux").unwrap();
    let short = Dataset::new()
        .with_errors("flux", flux.values().slice(s![.., ..100]).to_owned(), flux.errors().slice(s![.., ..100]).to_owned())
        .unwrap();
    let options = FitOptions::infer_latents(&model, &trained.params, 100);
    let err = BlockWls::default().fit(&model, &short, &options).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, FitError::Data(DataError::Shape { .. })), "{err:?}");
    for part in ["`flux`", "100", "128"] {
        assert!(message.contains(part), "{part} missing from: {message}");
    }
}

/// Simulates the tutorial data standardized, with an extra Gaussian noise on the flux whose
/// standard deviation `1 − cos(2π p / 32)` runs between 0 and 2 over pixels p and is
/// not in the reported errors. Returns the training set, the flux-only test set, the
/// test stars' true labels (standardized) and the true scatter.
fn periodic_scatter_set() -> (Dataset, Dataset, Array2<f64>, Array1<f64>) {
    let sim = simulate(1536, 7);
    let scaler = ShiftScale::fit(&sim.data).unwrap();
    let data = scaler.transform(&sim.data).unwrap();
    let scatter = Array1::from_shape_fn(P, |p| 1.0 - (2.0 * std::f64::consts::PI * p as f64 / 32.0).cos());

    let mut rng = StdRng::seed_from_u64(70);
    let flux = data.require("flux").unwrap();
    let mut values = flux.values().clone();
    for mut row in values.rows_mut() {
        for (v, s) in row.iter_mut().zip(&scatter) {
            let u: f64 = StandardNormal.sample(&mut rng);
            *v += s * u;
        }
    }
    let data = replace(&data, "flux", values, flux.errors());
    let (train, test) = data.split_at(1024).unwrap();
    let truth = sim.latents.dot(&sim.label_matrix.t()).slice(s![1024.., ..]).to_owned();
    let truth = (truth - &scaler.shift("label").unwrap()) / &scaler.scale("label").unwrap();
    (train, test.with_only(&["flux"]).unwrap(), truth, scatter)
}

#[test]
fn periodic_scatter_recovered() {
    let (train, test, truth, scatter) = periodic_scatter_set();

    // Reported errors are positive, so the variance σ² + s² never reaches zero and the
    // likelihood stays bounded as a residual and its scatter shrink together.
    let with = LuxScatter::new(K, L, P).unwrap();
    let fit = BlockWls::default().fit(&with, &train, &FitOptions::default()).unwrap();
    assert!(!fit.diverged());
    let fitted = fit.params.vector("s").unwrap().to_owned();
    let r = correlation(&fitted, &scatter);
    assert!(r > 0.95, "correlation {r}");
    for p in (0..P).filter(|&p| scatter[p] > 0.5) {
        assert!(fitted[p] > 0.1, "pixel {p}: fitted {} against true {}", fitted[p], scatter[p]);
    }

    let without = lux(P);
    let plain = BlockWls::default().fit(&without, &train, &FitOptions::default()).unwrap();
    let (_, labels_with) = infer_labels(&with, &fit.params, &test);
    let (_, labels_without) = infer_labels(&without, &plain.params, &test);
    let (rmse_with, rmse_without) = (rmse(&labels_with, &truth), rmse(&labels_without, &truth));
    assert!(rmse_with < rmse_without, "with scatter {rmse_with}, without {rmse_without}");
}

#[test]
fn latent_uncertainty_calibrated() {
    let sim = simulate(1536, 8);
    let (train, test) = sim.data.split_at(1024).unwrap();
    let test = test.with_only(&["flux"]).unwrap();
    let model = lux(P);
    let trained = BlockWls::default().fit(&model, &train, &FitOptions::default()).unwrap();
    let (params, _) = infer_labels(&model, &trained.params, &test);

    let covariance = latent_covariance(&model, &params, &test).unwrap();
    assert_eq!(covariance.method, CovarianceMethod::Exact);
    assert!(covariance.not_positive_definite.is_empty());
    let map = map_covariance(&model, &trained.params, &train, "label").unwrap();
    let labels = predict_with_uncertainty(&model, &params, &covariance, Some(&map), "label", true).unwrap();

    let truth = sim.latents.dot(&sim.label_matrix.t()).slice(s![1024.., ..]).to_owned();
    let std_of = |std: &Array2<f64>| {
        let standardized = (&labels.mean - &truth) / std;
        let n = standardized.len() as f64;
        let mean = standardized.sum() / n;
        (standardized.mapv(|x| (x - mean).powi(2)).sum() / n).sqrt()
    };
    let std = std_of(&labels.std);
    assert!((0.8..=1.25).contains(&std), "standardized residuals have std {std}");

    // With 1024 training stars the map's own uncertainty matters: the latents alone
    // explain too little of the residuals.
    let latents_only = predict_with_uncertainty(&model, &params, &covariance, None, "label", false).unwrap();
    let too_narrow = std_of(&latents_only.std);
    assert!(too_narrow > 1.25, "latent uncertainty alone gives std {too_narrow}");

    // The full covariance has the standard deviations on its diagonal.
    let full = labels.covariance.as_ref().unwrap();
    assert!(latents_only.covariance.is_none());
    assert!((full[[3, 1, 1]].sqrt() - labels.std[[3, 1]]).abs() < 1e-15);

    // For a model linear in the latents the Laplace approximation is exact too.
    let laplace = laplace_latent_covariance(&model, &params, &test).unwrap();
    let diff = (&laplace.covariance - &covariance.covariance).iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let size = covariance.covariance.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    assert!(diff < 1e-5 * size, "Laplace differs by {diff:e} of {size:e}");
}

#[test]
fn covariance_nan_without_data_or_prior() {
    lux::lux_model! {
        /// Lux with flat latent priors.
        model FlatLux(latents: K, labels: L, pixels: P) {
            latent z: [K] ~ Flat;
            param A: [L, K] ~ Normal(0.0, 1.0);
            param B: [P, K] ~ Normal(0.0, 1.0);
            observe label: [L] ~ Normal(A * z, err);
            observe flux: [P] ~ Normal(B * z, err);
        }
    }
    let sim = simulate(40, 9);
    let model = FlatLux::new(K, L, P).unwrap();
    let mut params = Params::new(sim.latents.clone())
        .with("A", sim.label_matrix.clone().into_dyn())
        .with("B", sim.flux_matrix.clone().into_dyn());
    let flux = sim.data.require("flux").unwrap();
    let mut errors = flux.errors();
    errors.row_mut(5).fill(f64::INFINITY);
    let data = replace(&sim.data.with_only(&["flux"]).unwrap(), "flux", flux.values().clone(), errors);

    let covariance = latent_covariance(&model, &params, &data).unwrap();
    assert_eq!(covariance.not_positive_definite, [5]);
    assert!(covariance.covariance.index_axis(Axis(0), 5).iter().all(|x| x.is_nan()));
    assert!(covariance.covariance.index_axis(Axis(0), 4).iter().all(|x| x.is_finite()));

    params.latents_mut().row_mut(5).fill(0.0);
    let laplace = laplace_latent_covariance(&model, &params, &data).unwrap();
    assert_eq!(laplace.not_positive_definite, [5]);
}

/// Simulates the tutorial data standardized, with flux pixel 40 multiplied by `factor`.
fn with_huge_pixel(factor: f64) -> Dataset {
    let sim = simulate(200, 10);
    let scaler = ShiftScale::fit(&sim.data).unwrap();
    let data = scaler.transform(&sim.data).unwrap();
    let flux = data.require("flux").unwrap();
    let mut values = flux.values().clone();
    values.column_mut(40).mapv_inplace(|v| v * factor);
    replace(&data, "flux", values, flux.errors())
}

#[test]
fn adam_huge_pixel_stays_finite() {
    // Adam's steps are bounded by the learning rate, so a pixel scaled by 1e6 makes the
    // loss huge (about 3e15) but no step overflows. At step size 1.0 the fit runs to
    // its cap with finite values and reports that it did not converge.
    let data = with_huge_pixel(1e6);
    let fit = Adam::new(1.0, 2000).fit(&lux(P), &data, &FitOptions::default()).unwrap();
    assert_eq!(fit.status, FitStatus::MaxIterations);
    assert!(fit.loss < fit.loss_history[0]);
    assert!(fit.latents().iter().all(|x| x.is_finite()));
}

#[test]
fn adam_overflow_reports_diverged() {
    // At step size 1e150 the first steps move the parameters by about 1e150, and the
    // squared residuals overflow: the fit stops there and keeps the last finite iterate.
    let data = with_huge_pixel(1e6);
    let model = lux(P);
    let fit = Adam::new(1e150, 2000).fit(&model, &data, &FitOptions::default()).unwrap();
    let FitStatus::Diverged { iteration, quantity } = &fit.status else {
        panic!("expected divergence, got {:?} with loss {}", fit.status, fit.loss)
    };
    assert!(*iteration > 0, "{iteration}");
    assert!(*iteration < 2000, "{iteration}");
    assert_eq!(quantity, "loss");
    assert_eq!(fit.loss_history.len(), *iteration);
    assert!(fit.loss.is_finite());
    assert!(fit.latents().iter().all(|x| x.is_finite()));
    assert!(fit.params.globals().all(|(_, v)| v.iter().all(|x| x.is_finite())));
    let loss = model.loss(&fit.params, &data).unwrap();
    assert!((fit.loss - loss).abs() <= 1e-12 * loss, "{} vs {loss}", fit.loss);
}
