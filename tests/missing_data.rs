//! Missing data: errors and inverse variances agree, masked values never reach a fit,
//! and an object lacking a whole output is fitted from the outputs it has.

use lux::dsl::ndarray::{Array1, Array2, Axis, s};
use lux::dsl::simulate::linear_tutorial;
use lux::dsl::{Dataset, Model, Params, Prior};
use lux::infer::{Adam, BlockWls, Engine, Fit, FitOptions};

const N: usize = 200;
const K: usize = 4;
const L: usize = 2;
const P: usize = 20;

/// Builds `label = A z` and `flux = B z`, every prior Normal(0, 1).
fn lux_model() -> Model {
    let mut b = Model::builder();
    let z = b.latent("z", K, Prior::standard_normal()).unwrap();
    let a = b.param("A", &[L, K], Prior::standard_normal()).unwrap();
    let bb = b.param("B", &[P, K], Prior::standard_normal()).unwrap();
    let label = b.linear(a, z).unwrap();
    let flux = b.linear(bb, z).unwrap();
    b.observe("label", label, None).unwrap();
    b.observe("flux", flux, None).unwrap();
    b.build().unwrap()
}

/// Raw values and 1-sigma errors of both outputs of the simulated set.
struct Raw {
    label: (Array2<f64>, Array2<f64>),
    flux: (Array2<f64>, Array2<f64>),
}

fn raw(seed: u64) -> Raw {
    let sim = linear_tutorial(N, K, L, P, seed).unwrap();
    let parts = |name: &str| {
        let out = sim.data.require(name).unwrap();
        (out.values().clone(), out.errors())
    };
    Raw {
        label: parts("label"),
        flux: parts("flux"),
    }
}

/// About one element in nine, spread over every row and column.
fn masked(n: usize, p: usize) -> bool {
    (7 * n + 13 * p) % 9 == 0
}

/// Values and errors of both outputs, with each masked element replaced by
/// `mark(n, p, value, error)`.
fn marked(
    raw: &Raw,
    mark: impl Fn(usize, usize, f64, f64) -> (f64, f64),
) -> Vec<(&'static str, Array2<f64>, Array2<f64>)> {
    let mut parts = Vec::new();
    for (name, (values, errors)) in [("label", &raw.label), ("flux", &raw.flux)] {
        let (mut values, mut errors) = (values.clone(), errors.clone());
        for ((n, p), v) in values.indexed_iter_mut() {
            if masked(n, p) {
                (*v, errors[[n, p]]) = mark(n, p, *v, errors[[n, p]]);
            }
        }
        parts.push((name, values, errors));
    }
    parts
}

/// Builds a data set from values and 1-sigma errors.
fn by_errors(parts: &[(&str, Array2<f64>, Array2<f64>)]) -> Dataset {
    parts
        .iter()
        .fold(Dataset::new(), |data, (name, values, errors)| {
            data.with_errors(name, values.clone(), errors.clone())
                .unwrap()
        })
}

/// Builds the same data from inverse variances `σ⁻²` (computed by `powi(-2)`, which may
/// differ from `1/(σ·σ)` in the last bit), 0 where the error is not finite and positive.
fn by_ivar(parts: &[(&str, Array2<f64>, Array2<f64>)]) -> Dataset {
    parts
        .iter()
        .fold(Dataset::new(), |data, (name, values, errors)| {
            let ivar = errors.mapv(|e| {
                if e.is_finite() && e > 0.0 {
                    e.powi(-2)
                } else {
                    0.0
                }
            });
            data.with_ivar(name, values.clone(), ivar).unwrap()
        })
}

/// Builds a data set where each masked element is replaced by `mark(value, error)`.
fn with_mask(raw: &Raw, mark: impl Fn(f64, f64) -> (f64, f64)) -> Dataset {
    by_errors(&marked(raw, |_, _, v, e| mark(v, e)))
}

fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-300)
}

/// Largest relative difference over the loss, the latents and every global parameter,
/// each array measured against its own largest element.
fn fit_difference(a: &Fit, b: &Fit) -> f64 {
    let array = |x: &[f64], y: &[f64]| {
        let scale = x
            .iter()
            .chain(y)
            .fold(0.0f64, |m, v| m.max(v.abs()))
            .max(1e-300);
        x.iter()
            .zip(y)
            .fold(0.0f64, |m, (u, v)| m.max((u - v).abs() / scale))
    };
    let mut worst = relative(a.loss, b.loss);
    worst = worst.max(array(
        a.latents().as_slice().unwrap(),
        b.latents().as_slice().unwrap(),
    ));
    for (name, value) in a.params.globals() {
        let other = b.get(name).unwrap();
        worst = worst.max(array(value.as_slice().unwrap(), other.as_slice().unwrap()));
    }
    worst
}

fn wls() -> BlockWls {
    BlockWls::new(200, 1e-10)
}

/// Solves one object's latents by hand from raw arrays, `(Σ_o A_oᵀ W A_o + I) z =
/// Σ_o A_oᵀ W y` with `W = 1/σ²`, leaving out the elements for which `skip(p)` is true.
/// `outputs` pairs each output's matrix name with its values and errors.
fn latents_by_hand(
    params: &Params,
    outputs: &[(&str, &Array2<f64>, &Array2<f64>)],
    row: usize,
    skip: impl Fn(usize) -> bool,
) -> Array1<f64> {
    let mut normal = Array2::<f64>::eye(K);
    let mut rhs = Array1::<f64>::zeros(K);
    for &(matrix, values, errors) in outputs {
        let a = params.matrix(matrix).unwrap();
        for p in (0..values.ncols()).filter(|&p| !skip(p)) {
            let w = 1.0 / (errors[[row, p]] * errors[[row, p]]);
            let y = values[[row, p]];
            for i in 0..K {
                rhs[i] += w * y * a[[p, i]];
                for j in 0..K {
                    normal[[i, j]] += w * a[[p, i]] * a[[p, j]];
                }
            }
        }
    }
    solve(normal, rhs)
}

/// Gaussian elimination with partial pivoting (the systems here are small and SPD).
fn solve(mut m: Array2<f64>, mut b: Array1<f64>) -> Array1<f64> {
    let k = b.len();
    for col in 0..k {
        let pivot = (col..k)
            .max_by(|&i, &j| m[[i, col]].abs().total_cmp(&m[[j, col]].abs()))
            .unwrap();
        for j in 0..k {
            m.swap([col, j], [pivot, j]);
        }
        b.swap(col, pivot);
        for row in col + 1..k {
            let f = m[[row, col]] / m[[col, col]];
            for j in col..k {
                m[[row, j]] -= f * m[[col, j]];
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = Array1::zeros(k);
    for row in (0..k).rev() {
        let tail: f64 = (row + 1..k).map(|j| m[[row, j]] * x[j]).sum();
        x[row] = (b[row] - tail) / m[[row, row]];
    }
    x
}

#[test]
fn errors_and_ivar_agree() {
    let raw = raw(21);
    // Missing elements in every form an error can take: infinite, zero, negative, NaN,
    // and NaN values with a good error.
    let parts = marked(&raw, |n, p, v, e| match (n + p) % 5 {
        0 => (v, f64::INFINITY),
        1 => (v, 0.0),
        2 => (v, -e),
        3 => (v, f64::NAN),
        _ => (f64::NAN, e),
    });
    let data = by_errors(&parts);
    let by_ivar = by_ivar(&parts);
    let missing = data
        .outputs()
        .map(|(_, o)| o.size() * o.n_objects() - o.n_observed())
        .sum::<usize>();
    assert!(missing > 400, "{missing} missing elements");
    assert_eq!(by_ivar.n_observed(), data.n_observed());

    let model = lux_model();
    let options = FitOptions::default().seed(3);
    let a = wls().fit(&model, &data, &options).unwrap();
    let b = wls().fit(&model, &by_ivar, &options).unwrap();
    assert!(a.converged());
    assert!(b.converged());
    let difference = fit_difference(&a, &b);
    assert!(
        difference < 1e-12,
        "block WLS fits differ by {difference:e}"
    );

    let adam = Adam::new(1e-2, 300);
    let a = adam.fit(&model, &data, &options).unwrap();
    let b = adam.fit(&model, &by_ivar, &options).unwrap();
    let difference = fit_difference(&a, &b);
    assert!(difference < 1e-10, "Adam fits differ by {difference:e}");
}

#[test]
fn masked_values_never_leak() {
    let raw = raw(22);
    let garbage_inf_error = with_mask(&raw, |_, _| (1e9, f64::INFINITY));
    let huge_zero_error = with_mask(&raw, |_, _| (-1e300, 0.0));
    let nan_value = with_mask(&raw, |_, e| (f64::NAN, e));
    let nan_error = with_mask(&raw, |v, _| (v * 1e3, f64::NAN));

    let model = lux_model();
    let options = FitOptions::default().seed(4);
    let reference = wls().fit(&model, &garbage_inf_error, &options).unwrap();
    assert!(reference.converged());
    for (case, data) in [
        ("-1e300, σ = 0", &huge_zero_error),
        ("NaN value", &nan_value),
        ("σ = NaN", &nan_error),
    ] {
        let fit = wls().fit(&model, data, &options).unwrap();
        let difference = fit_difference(&reference, &fit);
        assert!(difference < 1e-12, "{case}: fits differ by {difference:e}");
    }

    // Independent of how the data were cleaned: with the global parameters held, every
    // object's latents are the hand-made weighted least-squares solution over its
    // observed elements only.
    let inferred = wls()
        .fit(
            &model,
            &nan_value,
            &FitOptions::infer_latents(&model, &reference.params, N),
        )
        .unwrap();
    for row in 0..N {
        let outputs = [
            ("A", &raw.label.0, &raw.label.1),
            ("B", &raw.flux.0, &raw.flux.1),
        ];
        let expected = latents_by_hand(&reference.params, &outputs, row, |p| masked(row, p));
        let got = inferred.latents().row(row);
        for k in 0..K {
            assert!(
                (got[k] - expected[k]).abs() < 1e-10 * expected[k].abs().max(1.0),
                "row {row}: {got} vs {expected}"
            );
        }
    }

    // The loss, too, counts observed elements only.
    let fixed_loss = model.loss(&reference.params, &nan_value).unwrap();
    let by_hand = loss_by_hand(&model, &reference.params, &raw);
    assert!(
        relative(fixed_loss, by_hand) < 1e-12,
        "{fixed_loss} vs {by_hand}"
    );
}

/// Computes the negative log posterior over the unmasked elements of `raw` from the raw
/// arrays.
fn loss_by_hand(model: &Model, params: &Params, raw: &Raw) -> f64 {
    let half_ln_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
    let predicted = model.predict(params).unwrap();
    let mut total = 0.0;
    for (name, (values, errors)) in [("label", &raw.label), ("flux", &raw.flux)] {
        for ((n, p), &y) in values.indexed_iter() {
            if !masked(n, p) {
                let (r, e) = (y - predicted[name][[n, p]], errors[[n, p]]);
                total += 0.5 * (r / e).powi(2) + e.ln() + half_ln_2pi;
            }
        }
    }
    let prior = |x: f64| 0.5 * x * x + half_ln_2pi;
    total += params.latents().iter().map(|&x| prior(x)).sum::<f64>();
    for (_, value) in params.globals() {
        total += value.iter().map(|&x| prior(x)).sum::<f64>();
    }
    total
}

/// Returns `data` with every label of `rows` missing (value NaN, error infinite).
fn drop_labels(data: &Dataset, rows: &[usize]) -> Dataset {
    let label = data.require("label").unwrap();
    let (mut values, mut errors) = (label.values().clone(), label.errors());
    for &row in rows {
        values.row_mut(row).fill(f64::NAN);
        errors.row_mut(row).fill(f64::INFINITY);
    }
    data.without("label")
        .unwrap()
        .with_errors("label", values, errors)
        .unwrap()
}

#[test]
fn object_without_labels() {
    let sim = linear_tutorial(N, K, L, P, 23).unwrap();
    let unlabelled: Vec<usize> = (0..N).step_by(10).collect();
    let data = drop_labels(&sim.data, &unlabelled);
    assert!(
        unlabelled
            .iter()
            .all(|&row| !data.require("label").unwrap().row_observed(row))
    );

    let model = lux_model();
    let fit = wls()
        .fit(&model, &data, &FitOptions::default().seed(5))
        .unwrap();
    assert!(fit.converged(), "{} cycles", fit.iterations);

    // The labels of the unlabelled objects are predicted from their flux alone, close
    // to the truth (the label noise alone is 0.01 to 0.1).
    let predicted = &model.predict(&fit.params).unwrap()["label"];
    let truth = sim.latents.slice(s![.., ..L]);
    let mut squared = 0.0;
    for &row in &unlabelled {
        for l in 0..L {
            squared += (predicted[[row, l]] - truth[[row, l]]).powi(2);
        }
    }
    let rmse = (squared / (unlabelled.len() * L) as f64).sqrt();
    assert!(rmse < 0.03, "label RMSE of unlabelled objects {rmse}");

    // Their fitted latents are the latents of the same flux with no label output at
    // all, under the fitted global parameters.
    let flux_only = data
        .select_rows(&unlabelled)
        .unwrap()
        .with_only(&["flux"])
        .unwrap();
    let alone = wls()
        .fit(
            &model,
            &flux_only,
            &FitOptions::infer_latents(&model, &fit.params, unlabelled.len()),
        )
        .unwrap();
    for (i, &row) in unlabelled.iter().enumerate() {
        for k in 0..K {
            let (a, b) = (fit.latents()[[row, k]], alone.latents()[[i, k]]);
            assert!((a - b).abs() < 1e-6, "row {row}, latent {k}: {a} vs {b}");
        }
    }
}

#[test]
fn empty_object_changes_nothing() {
    // An object with no measurement at all has its latents at the prior mean, and the
    // other objects and the global parameters are fitted as if it were not there.
    let sim = linear_tutorial(N, K, L, P, 24).unwrap();
    let empty = 37;
    let mut data = Dataset::new();
    for (name, out) in sim.data.outputs() {
        let mut errors = out.errors();
        errors.row_mut(empty).fill(f64::INFINITY);
        data = data
            .with_errors(name, out.values().clone(), errors)
            .unwrap();
    }
    let kept_rows: Vec<usize> = (0..N).filter(|&n| n != empty).collect();
    let model = lux_model();
    let init = model.sample_params(N, 6);
    let mut init_kept = init.clone();
    init_kept.set_latents(init.latents().select(Axis(0), &kept_rows));

    let engine = BlockWls {
        accelerate: false,
        ..BlockWls::new(30, 0.0)
    };
    let with = engine
        .fit(&model, &data, &FitOptions::from_init(init))
        .unwrap();
    let without = engine
        .fit(
            &model,
            &data.select_rows(&kept_rows).unwrap(),
            &FitOptions::from_init(init_kept),
        )
        .unwrap();

    assert!(with.latents().row(empty).iter().all(|&z| z == 0.0));
    assert_eq!(with.warnings.len(), 1, "{:?}", with.warnings);
    assert!(with.warnings[0].contains("rows [37]"), "{}", with.warnings[0]);
    assert_eq!(with.coverage.empty_objects, [37]);
    assert!(without.warnings.is_empty(), "{:?}", without.warnings);
    // The empty object adds only its latents' prior at zero: K · ½ ln 2π.
    let offset = K as f64 * 0.5 * (2.0 * std::f64::consts::PI).ln();
    assert!(
        (with.loss - without.loss - offset).abs() < 1e-8 * without.loss.abs(),
        "{} vs {}",
        with.loss,
        without.loss
    );
    for (name, value) in without.params.globals() {
        let other = with.get(name).unwrap();
        let worst = value
            .iter()
            .zip(other)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst < 1e-9, "`{name}` differs by {worst:e}");
    }
    let latents_kept = with.latents().select(Axis(0), &kept_rows);
    let worst = (&latents_kept - without.latents())
        .iter()
        .fold(0.0f64, |m, d| m.max(d.abs()));
    assert!(worst < 1e-9, "latents differ by {worst:e}");
}

#[test]
fn flux_only_test_set() {
    let sim = linear_tutorial(2 * N, K, L, P, 25).unwrap();
    let (train, test) = sim.data.split_at(N).unwrap();
    let model = lux_model();
    let trained = wls()
        .fit(&model, &train, &FitOptions::default().seed(7))
        .unwrap();
    assert!(trained.converged());

    let flux_only = test.with_only(&["flux"]).unwrap();
    let all_rows: Vec<usize> = (0..N).collect();
    let no_labels = drop_labels(&test, &all_rows);
    assert_eq!(no_labels.require("label").unwrap().n_observed(), 0);
    let options = FitOptions::infer_latents(&model, &trained.params, N);

    for engine in [&wls() as &dyn Engine, &Adam::new(5e-2, 400)] {
        let a = engine.fit(&model, &flux_only, &options).unwrap();
        let b = engine.fit(&model, &no_labels, &options).unwrap();
        let difference = fit_difference(&a, &b);
        assert!(
            difference < 1e-12,
            "{}: fits differ by {difference:e}",
            engine.name()
        );
    }

    // The exact solve is the hand-made one from the flux alone.
    let test_flux = test.require("flux").unwrap();
    let flux = (test_flux.values().clone(), test_flux.errors());
    let inferred = wls().fit(&model, &no_labels, &options).unwrap();
    assert_eq!(inferred.iterations, 1);
    for row in 0..N {
        let expected = latents_by_hand(&trained.params, &[("B", &flux.0, &flux.1)], row, |_| false);
        let got = inferred.latents().row(row);
        for k in 0..K {
            assert!(
                (got[k] - expected[k]).abs() < 1e-10 * expected[k].abs().max(1.0),
                "row {row}: {got} vs {expected}"
            );
        }
    }
}

#[test]
fn unobserved_pixel_is_reported() {
    // A pixel that no star observes keeps its Normal-prior row of B at the prior mean,
    // and the fit warns about it rather than failing.
    let raw = raw(31);
    let mut flux_err = raw.flux.1.clone();
    flux_err.column_mut(3).fill(f64::INFINITY);
    let data = by_errors(&[
        ("label", raw.label.0.clone(), raw.label.1.clone()),
        ("flux", raw.flux.0.clone(), flux_err),
    ]);
    let model = lux_model();
    let fit = wls().fit(&model, &data, &FitOptions::default()).unwrap();

    assert_eq!(fit.warnings.len(), 1, "{:?}", fit.warnings);
    assert!(fit.warnings[0].contains("`flux`"), "{}", fit.warnings[0]);
    assert!(fit.warnings[0].contains("columns [3]"), "{}", fit.warnings[0]);
    assert_eq!(fit.coverage.output("flux").unwrap().empty_columns, [3]);
    let row = fit.get("B").unwrap().slice(s![3, ..]).to_owned();
    assert!(row.iter().all(|&b| b.abs() < 1e-12), "{row}");
}
