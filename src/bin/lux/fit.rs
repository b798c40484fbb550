//! `lux fit`: preprocessing, cross-validation, the final fit and the saved model.

use std::path::Path;
use std::time::Instant;

use lux::dsl::ndarray::{Array2, Axis};
use lux::dsl::{Dataset, Params, ShiftScale};
use lux::infer::{Adam, BlockWls, Engine, Fit, FitError, FitOptions, FitStatus, StoppingRule, map_covariance};
use lux::plot::{self, LabelPanel, MAD_TO_SIGMA, SpectrumPanel};
use lux::saved::{
    CvSummary, Dims, FitSummary, KIND_CANNON, KIND_LUX, LabelMetrics, LabelSpec, LabelTransform, ModelSpec,
    Preprocessing, SavedArray, SavedError, SavedModel, SavedNormalization, SavedScaler, build_cannon, build_lux,
};
use lux::survey::{self, AssumedError, ContinuumFit, LabelErrors, LabelTable, SpectraSet};

use crate::error::CliError;
use crate::input::{self, cell, unit};
use crate::progress::Progress;
use crate::settings::{DEFAULTS, EngineKind, FitArgs, ModelKind, Norm, StartKind, Stopping};

/// Spectra to show with their reconstruction in the spectra figure.
const SPECTRA_SHOWN: usize = 3;

/// Labelled stars, preprocessed, with everything a training run needs.
struct Training {
    preprocessing: Preprocessing,
    labels: Vec<LabelSpec>,
    /// Model pixel grid.
    wavelength: Vec<f64>,
    ids: Vec<String>,
    /// N×P preprocessed flux.
    flux: Array2<f64>,
    /// N×L catalogue labels and their assumed 1-sigma errors, catalogue units.
    catalogue: Array2<f64>,
    catalogue_err: Array2<f64>,
}

/// One trained model and its fit.
struct Trained {
    saved: SavedModel,
    fit: Fit,
    seconds: f64,
}

pub fn run(args: &FitArgs) -> Result<(), CliError> {
    let started = Instant::now();
    if !(args.ridge_alpha.is_finite() && args.ridge_alpha >= 0.0) {
        return Err(CliError::Option {
            option: "--ridge-alpha",
            value: args.ridge_alpha.to_string(),
            reason: "give a finite penalty >= 0 (0 skips the ridge baseline)".into(),
        });
    }
    if !(args.label_clip.is_finite() && args.label_clip >= 0.0) {
        return Err(CliError::Option {
            option: "--label-clip",
            value: args.label_clip.to_string(),
            reason: "give a finite number of standard deviations >= 0 (0 keeps every label)".into(),
        });
    }
    if !(args.label_weight.is_finite() && args.label_weight > 0.0) {
        return Err(CliError::Option {
            option: "--label-weight",
            value: args.label_weight.to_string(),
            reason: "give a finite factor > 0 (1 keeps the assumed label errors)".into(),
        });
    }
    let data = load(args)?;
    let n = data.ids.len();
    println!(
        "{} labelled spectra, {} pixels from {:.1} to {:.1} Å, labels {}",
        n,
        data.wavelength.len(),
        data.wavelength.first().copied().unwrap_or(f64::NAN),
        data.wavelength.last().copied().unwrap_or(f64::NAN),
        data.labels
            .iter()
            .map(|l| if l.transform == LabelTransform::Log10 { format!("log10 {}", l.name) } else { l.name.clone() })
            .collect::<Vec<_>>()
            .join(", ")
    );

    let splits = splits(args, n)?;
    let progress = Progress::new(splits.len() as u64 + 1);

    // Cross-validation: train on the other folds, predict the held-out stars from flux alone.
    let l = data.labels.len();
    let mut predicted = Array2::from_elem((n, l), f64::NAN);
    let mut predicted_err = Array2::from_elem((n, l), f64::NAN);
    let mut ridge_predicted = Array2::from_elem((n, l), f64::NAN);
    let mut fold_of = vec![String::new(); n];
    let mut histories = Vec::new();
    let mut shown: Vec<(usize, Vec<f64>)> = Vec::new();
    let (mut fit_seconds, mut infer_seconds) = (0.0, 0.0);
    for (f, test) in splits.iter().enumerate() {
        let train: Vec<usize> = (0..n).filter(|i| !test.contains(i)).collect();
        progress.stage(format!("fold {}/{}: training on {} stars", f + 1, splits.len(), train.len()));
        let stage = format!("fold {}/{}", f + 1, splits.len());
        let trained = train_model(args, &data, &train, Some(progress.cycle_observer(stage)))?;
        progress.fit_done(trained.fit.loss);

        let infer_started = Instant::now();
        let prediction = trained.saved.predict_flux(&data.flux.select(Axis(0), test)).map_err(|err| match err {
            SavedError::Fit(fit) => name_star(fit, "inferring held-out latents", |row| data.ids[test[row]].clone(), &data.wavelength),
            other => other.into(),
        })?;
        let infer = infer_started.elapsed().as_secs_f64();
        for (row, &i) in test.iter().enumerate() {
            predicted.row_mut(i).assign(&prediction.values.row(row));
            predicted_err.row_mut(i).assign(&prediction.errors.row(row));
            fold_of[i] = (f + 1).to_string();
            if shown.len() < SPECTRA_SHOWN {
                shown.push((i, prediction.reconstruction.row(row).to_vec()));
            }
        }
        progress.println(format!(
            "fold {}/{}: {}; inferred {} stars in {:.3} s ({})",
            f + 1,
            splits.len(),
            summary_line(&trained.fit, trained.seconds, train.len()),
            test.len(),
            infer,
            status_name(&prediction.inference.status),
        ));
        if args.ridge_alpha > 0.0 {
            let ridge = ridge_fold(&data, &train, test, args.ridge_alpha);
            for (row, &i) in test.iter().enumerate() {
                ridge_predicted.row_mut(i).assign(&ridge.row(row));
            }
        }
        fit_seconds += trained.seconds;
        infer_seconds += infer;
        histories.push((format!("fold {}", f + 1), trained.fit.loss_history.clone()));
    }

    let cv = if splits.is_empty() {
        None
    } else {
        let thresholds = parse_pairs("--outliers", &args.outliers)?;
        let metrics = metrics(&data, &predicted, &thresholds);
        let folds = splits.len();
        let cv = CvSummary {
            scheme: if args.test_fraction.is_some() { "holdout".into() } else { "k-fold".into() },
            folds,
            labels: metrics,
            mean_fit_seconds: fit_seconds / folds as f64,
            mean_infer_seconds: infer_seconds / folds as f64,
        };
        progress.println(cv_table(&cv));
        if args.ridge_alpha > 0.0 {
            let ridge = CvSummary {
                labels: crate::fit::metrics(&data, &ridge_predicted, &thresholds),
                ..cv.clone()
            };
            progress.println(format!("ridge baseline (flux to labels, α = {}), same folds:", args.ridge_alpha));
            progress.println(cv_table(&ridge).lines().filter(|line| line.starts_with('|')).collect::<Vec<_>>().join("\n"));
        }
        Some(cv)
    };

    // The final model, on every labelled star.
    progress.stage(format!("final model: training on {n} stars"));
    let all: Vec<usize> = (0..n).collect();
    let mut trained = train_model(args, &data, &all, Some(progress.cycle_observer("final model".into())))?;
    progress.fit_done(trained.fit.loss);
    progress.println(format!("final model: {}", summary_line(&trained.fit, trained.seconds, n)));
    if trained.saved.fit.labels_clipped > 0 {
        progress.println(format!(
            "final model: {} of {} training labels left out of the label map as outliers (--label-clip {})",
            trained.saved.fit.labels_clipped,
            data.catalogue.iter().filter(|v| v.is_finite()).count(),
            args.label_clip
        ));
    }
    for warning in &trained.fit.warnings {
        progress.println(format!("warning: {warning}"));
    }
    if cv.is_some() {
        let model_error = model_errors(&data, &predicted, &predicted_err);
        progress.println(format!(
            "label model errors from the cross-validation, added to predicted uncertainties: {}",
            data.labels
                .iter()
                .zip(&model_error)
                .map(|(spec, e)| format!("{} {e:.4}", spec.name))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        trained.saved.label_model_error = Some(model_error);
    }
    if cv.is_none() {
        progress.println(
            "warning: without cross-validation the saved model has no label model error, so its predicted \
             uncertainties assume the model is right (on MILES they are then 3 to 4 times too small)"
                .to_string(),
        );
    }
    trained.saved.fit.cv = cv;
    histories.push(("final model".into(), trained.fit.loss_history.clone()));

    let final_prediction = match &args.final_predictions {
        Some(_) => Some(trained.saved.predict_flux(&data.flux)?),
        None => None,
    };
    progress.finish();

    // Outputs last, so a failure above leaves none of them behind.
    if let Some(path) = &args.predictions {
        write_cv_predictions(path, &data, &fold_of, &predicted, &predicted_err)?;
        println!("wrote cross-validated predictions to {}", path.display());
    }
    if let (Some(path), Some(prediction)) = (&args.final_predictions, &final_prediction) {
        let (header, columns) = input::prediction_columns(&prediction.names, &prediction.values, &prediction.errors);
        let header: Vec<String> = std::iter::once("id".to_string()).chain(header).collect();
        input::write_csv(path, &header, &data.ids, &columns)?;
        println!("wrote final-model predictions to {}", path.display());
    }
    if let Some(dir) = &args.plots {
        write_plots(dir, &data, &predicted, &predicted_err, &histories, &shown)?;
        println!("wrote figures to {}", dir.display());
    }
    trained.saved.save(&args.out)?;
    println!("saved model to {} ({:.1} s in all)", args.out.display(), started.elapsed().as_secs_f64());
    Ok(())
}

/// Reads and preprocesses spectra, joins labels, keeps stars with at least one label.
fn load(args: &FitArgs) -> Result<Training, CliError> {
    let paths = input::spectrum_paths(&args.input)?;
    let spectra = SpectraSet::from_spectra(input::read_spectra(&paths)?.into_iter().map(|(_, s)| s).collect())?;
    if !spectra.resampled.is_empty() {
        println!(
            "{} spectra were on another wavelength grid and were resampled onto that of {}",
            spectra.resampled.len(),
            spectra.ids[0]
        );
    }

    let window = match args.window.as_deref() {
        None => None,
        Some(&[lo, hi]) if lo < hi => Some([lo, hi]),
        Some(other) => {
            return Err(CliError::Option {
                option: "--window",
                value: format!("{other:?}"),
                reason: "give LO,HI in Å with LO < HI".into(),
            });
        }
    };
    let preprocessing = Preprocessing {
        input_wavelength: spectra.wavelength.to_vec(),
        window,
        bin: args.bin,
        normalization: match args.normalize {
            Norm::None => SavedNormalization::None,
            Norm::Median => SavedNormalization::Median,
            Norm::Continuum => {
                let c = ContinuumFit::default();
                SavedNormalization::Continuum {
                    degree: c.degree,
                    low_sigma: c.low_sigma,
                    high_sigma: c.high_sigma,
                    max_iter: c.max_iter,
                }
            }
        },
        mask_nonpositive: args.mask_nonpositive,
        snr: args.snr,
        error_floor: args.error_floor,
    };
    let prepared = preprocessing.apply(&spectra)?;

    let table = input::read_label_table(&args.labels, args.id_column.as_deref())?;
    // By default every column is a label, except the columns `col:` rules read errors from.
    let columns = match &args.label_columns {
        Some(wanted) => input::resolve_columns(&table, wanted)?,
        None => {
            let error_columns = error_column_names(&args.label_errors);
            table.names.iter().filter(|n| !error_columns.iter().any(|c| c.eq_ignore_ascii_case(n))).cloned().collect()
        }
    };
    let rules = label_error_rules(&args.label_errors, &columns)?;
    let requested: Vec<String> = rules
        .iter()
        .filter_map(|(_, rule)| match rule {
            ErrorRule::Column(column) => Some(column.clone()),
            ErrorRule::Assumed(_) => None,
        })
        .collect();
    let error_columns = input::resolve_columns(&table, &requested)?;
    let read_columns: Vec<&str> = columns.iter().chain(&error_columns).map(String::as_str).collect();
    let table = table.select(&read_columns)?;
    let both = survey::join(&prepared, &table)?;
    for line in &table.skipped {
        println!("warning: {}: {line}, left out", args.labels.display());
    }

    // Errors before the row filter: a label whose error column has no usable error
    // (NaN, infinite, zero or negative) is missing, like a label without a value.
    let l = columns.len();
    let mut joined = LabelTable {
        source: both.source.clone(),
        ids: both.ids.clone(),
        names: columns.clone(),
        values: both.values.slice(lux::dsl::ndarray::s![.., ..l]).to_owned(),
        skipped: Vec::new(),
    };
    let error_values: Vec<(String, Vec<f64>)> =
        error_columns.iter().enumerate().map(|(c, name)| (name.clone(), both.values.column(l + c).to_vec())).collect();
    let all_errors = label_error_matrix(&joined, &rules, &error_values)?;
    for (j, name) in columns.iter().enumerate() {
        let mut unusable = 0;
        for i in 0..joined.n_rows() {
            let e = all_errors[[i, j]];
            if joined.values[[i, j]].is_finite() && !(e.is_finite() && e > 0.0) {
                joined.values[[i, j]] = f64::NAN;
                unusable += 1;
            }
        }
        if unusable > 0 {
            println!("label {name}: {unusable} value(s) without a usable error (NaN, infinite, zero or negative) are treated as missing");
        }
    }
    // The Cannon's training latents are the labels themselves, so each star needs all of them.
    let require_all = args.require_all_labels || args.model == ModelKind::Cannon;
    let labelled = |i: usize| {
        let row = joined.values.row(i);
        if require_all { row.iter().all(|v| v.is_finite()) } else { row.iter().any(|v| v.is_finite()) }
    };
    let rows: Vec<usize> = (0..joined.n_rows()).filter(|&i| labelled(i)).collect();
    let skipped = joined.n_rows() - rows.len();
    if skipped > 0 {
        let unlabelled = (0..joined.n_rows()).filter(|&i| joined.values.row(i).iter().all(|v| !v.is_finite())).count();
        if require_all {
            println!(
                "{skipped} spectra lack at least one label in {} ({unlabelled} have none) and are left out",
                args.labels.display()
            );
        } else {
            println!("{skipped} spectra have no label in {} and are left out", args.labels.display());
        }
    }

    let labels = label_specs(args, &columns)?;
    let catalogue = joined.values.select(Axis(0), &rows);
    let catalogue_err = all_errors.select(Axis(0), &rows);
    let selected = LabelTable {
        source: joined.source.clone(),
        ids: rows.iter().map(|&i| joined.ids[i].clone()).collect(),
        names: columns,
        values: catalogue.clone(),
        skipped: Vec::new(),
    };
    Ok(Training {
        preprocessing,
        labels,
        wavelength: prepared.wavelength.to_vec(),
        ids: selected.ids,
        flux: prepared.flux.select(Axis(0), &rows),
        catalogue,
        catalogue_err,
    })
}

/// Label names and transforms; `--log-label` names must be label columns.
fn label_specs(args: &FitArgs, columns: &[String]) -> Result<Vec<LabelSpec>, CliError> {
    let (log, explicit) = match &args.log_label {
        Some(names) if names.iter().any(|n| n.eq_ignore_ascii_case("none")) => (Vec::new(), true),
        Some(names) => (names.clone(), true),
        None => (vec![DEFAULTS.log_labels.to_string()], false),
    };
    if explicit {
        if let Some(missing) = log.iter().find(|n| !columns.iter().any(|c| c.eq_ignore_ascii_case(n))) {
            return Err(CliError::Option {
                option: "--log-label",
                value: missing.clone(),
                reason: format!("not a fitted label; the labels are {}", columns.join(", ")),
            });
        }
    }
    Ok(columns
        .iter()
        .map(|name| LabelSpec {
            name: name.clone(),
            transform: if log.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                LabelTransform::Log10
            } else {
                LabelTransform::Identity
            },
        })
        .collect())
}

/// Parses `NAME=VALUE,...` or, with `columns`, positional `VALUE,...`.
fn parse_pairs(option: &'static str, text: &str) -> Result<Vec<(String, f64)>, CliError> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|item| {
            let bad = |reason: &str| CliError::Option {
                option,
                value: item.to_string(),
                reason: reason.to_string(),
            };
            let (name, value) = item.split_once('=').ok_or_else(|| bad("write NAME=VALUE"))?;
            let value: f64 = value.trim().parse().map_err(|_| bad("the value is not a number"))?;
            Ok((name.trim().to_string(), value))
        })
        .collect()
}

/// Errors of one label: an assumed rule, or a column of the label table.
#[derive(Debug, Clone, PartialEq)]
enum ErrorRule {
    Assumed(AssumedError),
    Column(String),
}

/// Returns the table columns that `col:` rules of `--label-errors` name.
fn error_column_names(text: &str) -> Vec<String> {
    text.split(',').filter_map(|item| item.split_once("col:")).map(|(_, column)| column.trim().to_string()).collect()
}

/// Parses `--label-errors` into `(label name, rule)` pairs.
fn label_error_rules(text: &str, columns: &[String]) -> Result<Vec<(String, ErrorRule)>, CliError> {
    let items: Vec<&str> = text.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    let named = items.iter().all(|s| s.contains('='));
    if !named && items.len() != columns.len() {
        return Err(CliError::Option {
            option: "--label-errors",
            value: text.to_string(),
            reason: format!("give NAME=ERR pairs, or one ERR per label column ({})", columns.join(", ")),
        });
    }
    let mut rules = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let (name, value) = match item.split_once('=') {
            Some((name, value)) => (name.trim().to_string(), value.trim()),
            None => (columns[i].clone(), *item),
        };
        let bad = || CliError::Option {
            option: "--label-errors",
            value: item.to_string(),
            reason: "write an error such as 0.2 (absolute), 2% or 0.02rel (relative), greater than 0, or col:NAME \
                     for a column of errors in the label table"
                .into(),
        };
        if let Some(column) = value.strip_prefix("col:") {
            if column.trim().is_empty() {
                return Err(bad());
            }
            rules.push((name, ErrorRule::Column(column.trim().to_string())));
            continue;
        }
        let (number, relative) = if let Some(v) = value.strip_suffix('%') {
            (v.trim().parse::<f64>().map_err(|_| bad())? / 100.0, true)
        } else if let Some(v) = value.strip_suffix("rel") {
            (v.trim().parse::<f64>().map_err(|_| bad())?, true)
        } else {
            (value.parse::<f64>().map_err(|_| bad())?, false)
        };
        if !(number > 0.0 && number.is_finite()) {
            return Err(bad());
        }
        let rule = if relative { AssumedError::Fraction(number) } else { AssumedError::Absolute(number) };
        rules.push((name, ErrorRule::Assumed(rule)));
    }
    Ok(rules)
}

/// Returns the N×L errors of `labels` (N×L, catalogue units) by `rules`, reading
/// `col:` rules from `error_values` (one N-vector per such rule, in rule order).
fn label_error_matrix(
    labels: &LabelTable,
    rules: &[(String, ErrorRule)],
    error_values: &[(String, Vec<f64>)],
) -> Result<Array2<f64>, CliError> {
    let mut errors = Array2::from_elem(labels.values.raw_dim(), f64::INFINITY);
    for (j, name) in labels.names.iter().enumerate() {
        let rule = rules.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, r)| r);
        let Some(rule) = rule else {
            return Err(CliError::Option {
                option: "--label-errors",
                value: rules.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", "),
                reason: format!(
                    "label column `{name}` has no error rule: add {name}=ERR or {name}=col:COLUMN, or leave it out \
                     of the labels with --label-columns"
                ),
            });
        };
        match rule {
            ErrorRule::Column(column) => {
                let (_, values) = error_values.iter().find(|(c, _)| c.eq_ignore_ascii_case(column)).expect("read with the labels");
                for (i, &value) in labels.values.column(j).iter().enumerate() {
                    if value.is_finite() {
                        errors[[i, j]] = values[i];
                    }
                }
            }
            ErrorRule::Assumed(_) => {
                let assumed = LabelErrors {
                    rules: rules
                        .iter()
                        .filter_map(|(n, r)| match r {
                            ErrorRule::Assumed(a) => Some((n.clone(), *a)),
                            ErrorRule::Column(_) => None,
                        })
                        .collect(),
                };
                let single = labels.select(&[name.as_str()])?;
                errors.column_mut(j).assign(&survey::label_errors(&single, &assumed)?.column(0));
            }
        }
    }
    Ok(errors)
}

/// Returns the held-out rows of each split: shuffled k-fold, or one hold-out set.
fn splits(args: &FitArgs, n: usize) -> Result<Vec<Vec<usize>>, CliError> {
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, args.seed);
    let too_few = |needed: usize, what: String| CliError::TooFewStars {
        labels: args.labels.clone(),
        found: n,
        needed,
        what,
    };
    if let Some(fraction) = args.test_fraction {
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(CliError::Option {
                option: "--test-fraction",
                value: fraction.to_string(),
                reason: "give a fraction between 0 and 1".into(),
            });
        }
        let n_test = ((fraction * n as f64).round() as usize).max(1);
        if n_test + 2 > n {
            return Err(too_few(n_test + 2, format!("a hold-out fraction of {fraction}")));
        }
        let mut test = order[..n_test].to_vec();
        test.sort_unstable();
        return Ok(vec![test]);
    }
    if args.folds <= 1 {
        return Ok(Vec::new());
    }
    if n < 2 * args.folds {
        return Err(too_few(2 * args.folds, format!("{} folds", args.folds)));
    }
    Ok((0..args.folds)
        .map(|f| {
            let mut test: Vec<usize> = order.iter().enumerate().filter(|(p, _)| p % args.folds == f).map(|(_, &i)| i).collect();
            test.sort_unstable();
            test
        })
        .collect())
}

/// Fisher–Yates shuffle driven by SplitMix64, so a seed gives the same folds everywhere.
fn shuffle(values: &mut [usize], seed: u64) {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for i in (1..values.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        values.swap(i, j);
    }
}

/// Trains a model on `rows` and packs it with its preprocessing.
fn train_model(
    args: &FitArgs,
    data: &Training,
    rows: &[usize],
    observer: Option<lux::infer::CycleObserver>,
) -> Result<Trained, CliError> {
    let flux = data.flux.select(Axis(0), rows);
    let flux_err = data.preprocessing.flux_errors(&flux)?;
    let catalogue = data.catalogue.select(Axis(0), rows);
    let catalogue_err = data.catalogue_err.select(Axis(0), rows);
    let mut label = catalogue.clone();
    let mut label_err = catalogue_err.clone();
    for ((i, l), value) in label.indexed_iter_mut() {
        let (v, e) = data.labels[l].forward(catalogue[[i, l]], catalogue_err[[i, l]]);
        *value = v;
        label_err[[i, l]] = e / args.label_weight;
    }

    let raw = Dataset::new().with_errors("flux", flux, flux_err)?.with_errors("label", label, label_err)?;
    let scaler = ShiftScale::fit(&raw)?;
    let train = scaler.transform(&raw)?;
    let cannon = args.model == ModelKind::Cannon;
    let dims = Dims {
        latents: if cannon { data.labels.len() } else { args.latents },
        labels: data.labels.len(),
        pixels: data.wavelength.len(),
    };
    let spec = ModelSpec {
        bias: args.bias && !cannon,
        scatter: args.scatter,
    };
    let model = if cannon { build_cannon(dims, spec)? } else { build_lux(dims, spec)? };

    let started = Instant::now();
    let options = if cannon {
        // The Cannon's training step: the latents are the training labels, held fixed,
        // and `theta` is one exact weighted solve per pixel, alternating with the scatter.
        let labels = train.output("label").expect("built above").values().clone();
        let n_features = model.params()[model.param_id("theta").expect("built above").index()].shape[1];
        let mut init = Params::new(labels).with("theta", Array2::<f64>::zeros((dims.pixels, n_features)).into_dyn());
        if args.scatter {
            init.insert("s", lux::dsl::ndarray::Array1::<f64>::zeros(dims.pixels).into_dyn());
        }
        FitOptions::from_init(init).fix_latents()
    } else {
        match args.start {
            StartKind::Random => FitOptions::default().seed(args.seed),
            StartKind::Pca => {
                FitOptions::from_init(lux::start::principal_components(&model, &train).map_err(|e| CliError::Option {
                    option: "--start",
                    value: "pca".into(),
                    reason: e.to_string(),
                })?)
            }
        }
    };
    let mut fit = match args.engine {
        EngineKind::Wls => BlockWls {
            on_cycle: observer,
            ..wls(args)
        }
        .fit(&model, &train, &options),
        EngineKind::Adam => Adam::new(args.learning_rate, args.steps).fit(&model, &train, &options),
    }
    .map_err(|err| name_star(err, "training", |row| data.ids[rows[row]].clone(), &data.wavelength))?;
    let mut clipped = 0;
    if args.refit_label_map && !cannon {
        clipped = refit_label_map(args, &model, &train, &mut fit)
            .map_err(|err| name_star(err, "refitting the label map", |row| data.ids[rows[row]].clone(), &data.wavelength))?;
    }
    let seconds = started.elapsed().as_secs_f64();
    // The map covariance needs the Lux form; without it the label errors are the latent part
    // alone. The Cannon has no label map.
    let map = if cannon { None } else { map_covariance(&model, &fit.params, &train, "label").ok() };

    let scaler = ["label", "flux"]
        .iter()
        .map(|&output| SavedScaler {
            output: output.to_string(),
            shift: scaler.shift(output).expect("fitted on it").to_vec(),
            scale: scaler.scale(output).expect("fitted on it").to_vec(),
        })
        .collect();
    let saved = SavedModel {
        format: lux::saved::FORMAT.into(),
        version: lux::saved::VERSION,
        kind: if cannon { KIND_CANNON.into() } else { KIND_LUX.into() },
        dims,
        labels: data.labels.clone(),
        wavelength: data.wavelength.clone(),
        preprocessing: data.preprocessing.clone(),
        model: spec,
        scaler,
        params: fit.params.globals().map(|(name, value)| SavedArray::from_array(name, value)).collect(),
        label_map_covariance: map.map(|m| SavedArray::from_array("label_map_covariance", &m.rows.into_dyn())),
        label_model_error: None,
        cannon_start: cannon.then(|| {
            let standardized = train.output("label").expect("built above").values();
            lux::ridge::Ridge::fit(&data.flux.select(Axis(0), rows), standardized, lux::saved::CANNON_START_ALPHA)
        }),
        fit: FitSummary {
            label_weight: args.label_weight,
            refit_label_map: args.refit_label_map && !cannon,
            label_clip: if args.refit_label_map && !cannon { args.label_clip } else { 0.0 },
            labels_clipped: clipped,
            engine: fit.engine.to_string(),
            status: status_name(&fit.status),
            cycles: fit.iterations,
            loss: fit.loss,
            max_abs_grad: fit.max_abs_grad,
            n_train: rows.len(),
            seed: args.seed,
            seconds,
            max_cycles: args.max_cycles,
            tol: args.tol,
            stopping: match args.stopping {
                Stopping::Relative => "relative".into(),
                Stopping::Reference => "reference".into(),
            },
            steps: (args.engine == EngineKind::Adam).then_some(args.steps),
            learning_rate: (args.engine == EngineKind::Adam).then_some(args.learning_rate),
            loss_history: fit.loss_history.clone(),
            cv: None,
        },
    };
    saved.check()?;
    Ok(Trained { saved, fit, seconds })
}

/// Returns, per label, the error to add in quadrature to the predicted uncertainties
/// (in fitted units), so that the cross-validated residuals have a robust scatter of 1
/// in units of their uncertainty. The formula is `s² = max(0, rs(Δ)² − median(σ²))`,
/// with `rs` the robust scatter (1.4826 MAD) of the residuals Δ in fitted units.
fn model_errors(data: &Training, predicted: &Array2<f64>, predicted_err: &Array2<f64>) -> Vec<f64> {
    data.labels
        .iter()
        .enumerate()
        .map(|(l, spec)| {
            let mut residuals = Vec::new();
            let mut variances = Vec::new();
            for i in 0..predicted.nrows() {
                let (value, err) = spec.forward(predicted[[i, l]], predicted_err[[i, l]]);
                let (truth, _) = spec.forward(data.catalogue[[i, l]], 0.0);
                if (value - truth).is_finite() && err.is_finite() {
                    residuals.push(value - truth);
                    variances.push(err * err);
                }
            }
            if residuals.is_empty() {
                return 0.0;
            }
            let center = median(&mut residuals.clone());
            let mut deviations: Vec<f64> = residuals.iter().map(|r| (r - center).abs()).collect();
            let scatter = MAD_TO_SIGMA * median(&mut deviations);
            (scatter * scatter - median(&mut variances)).max(0.0).sqrt()
        })
        .collect()
}

/// Predicts the labels of the `test` stars by ridge regression on the `train` stars,
/// in catalogue units (fitted in each label's transform, as the model is).
fn ridge_fold(data: &Training, train: &[usize], test: &[usize], alpha: f64) -> Array2<f64> {
    let mut labels = data.catalogue.select(Axis(0), train);
    for ((_, l), value) in labels.indexed_iter_mut() {
        *value = data.labels[l].forward(*value, 0.0).0;
    }
    let mut predicted = lux::ridge::ridge_predict(
        &data.flux.select(Axis(0), train),
        &labels,
        &data.flux.select(Axis(0), test),
        alpha,
    );
    for ((_, l), value) in predicted.indexed_iter_mut() {
        *value = data.labels[l].inverse(*value, 0.0).0;
    }
    predicted
}

/// Replaces the training latents by those inferred from flux alone, then refits the
/// label map (`A`, and `a` with biases) on them with everything else fixed, leaving out
/// the labels `--label-clip` marks as outliers. The fit's loss and status stay those of
/// the training fit. Returns how many labels were left out.
fn refit_label_map(args: &FitArgs, model: &lux::dsl::Model, train: &Dataset, fit: &mut Fit) -> Result<usize, FitError> {
    let engine = wls(args);
    let flux_only = train.with_only(&["flux"])?;
    let options = FitOptions::infer_latents(model, &fit.params, train.n_objects());
    let latents = engine.fit(model, &flux_only, &options)?.params;

    let mut options = FitOptions::from_init(latents).fix_latents();
    for node in model.params().iter().filter(|p| !["A", "a"].contains(&p.name.as_str())) {
        options = options.fix(&node.name);
    }
    let labels = train.with_only(&["label"])?;
    fit.params = engine.fit(model, &labels, &options)?.params;

    let mut clipped = 0;
    if args.label_clip > 0.0 {
        let out = labels.output("label").expect("selected above");
        let mut ivar = out.ivar().clone();
        for _ in 0..LABEL_CLIP_ROUNDS {
            let predicted = model.predict(&fit.params)?;
            let residual = out.values() - &predicted["label"];
            let cut = clip_outliers(&residual, &mut ivar, args.label_clip);
            if cut == 0 {
                break;
            }
            clipped += cut;
            let without_outliers = Dataset::new().with_ivar("label", out.values().clone(), ivar.clone())?;
            let options = FitOptions {
                init: Some(fit.params.clone()),
                ..options.clone()
            };
            fit.params = engine.fit(model, &without_outliers, &options)?.params;
        }
    }
    Ok(clipped)
}

/// Rounds of outlier rejection in the refit of the label map.
const LABEL_CLIP_ROUNDS: usize = 3;

/// Sets to zero the inverse variance of every label residual farther than `clip` robust
/// standard deviations (1.4826 MAD) from its column's median. The median and MAD are
/// over the elements still weighted. Returns how many elements it cut.
fn clip_outliers(residual: &Array2<f64>, ivar: &mut Array2<f64>, clip: f64) -> usize {
    let mut clipped = 0;
    for (l, column) in residual.columns().into_iter().enumerate() {
        let mut present: Vec<f64> = column.iter().zip(ivar.column(l)).filter(|(_, w)| **w > 0.0).map(|(r, _)| *r).collect();
        let center = median(&mut present);
        let mut deviations: Vec<f64> = present.iter().map(|r| (r - center).abs()).collect();
        let scatter = MAD_TO_SIGMA * median(&mut deviations);
        // Half the residuals or more are equal: no spread to measure outliers against.
        if !(scatter > 0.0) {
            continue;
        }
        for (i, r) in column.iter().enumerate() {
            if ivar[[i, l]] > 0.0 && (r - center).abs() > clip * scatter {
                ivar[[i, l]] = 0.0;
                clipped += 1;
            }
        }
    }
    clipped
}

/// Names the star or the pixel of a fit error that gives only a row or a column.
pub fn name_star(err: FitError, stage: &'static str, id: impl Fn(usize) -> String, wavelength: &[f64]) -> CliError {
    match err {
        FitError::Singular { what: "object", index, .. } => CliError::Star {
            stage,
            id: id(index),
            source: err,
        },
        FitError::Singular { ref block, index, .. } if block == "flux:mean" && index < wavelength.len() => {
            CliError::Pixel {
                stage,
                wavelength: wavelength[index],
                source: err,
            }
        }
        other => other.into(),
    }
}

fn wls(args: &FitArgs) -> BlockWls {
    let mut wls = BlockWls::new(args.max_cycles, args.tol);
    wls.stopping = match args.stopping {
        Stopping::Relative => StoppingRule::RelativeChange,
        Stopping::Reference => StoppingRule::Reference,
    };
    wls
}

pub fn status_name(status: &FitStatus) -> String {
    match status {
        FitStatus::Converged => "converged".into(),
        FitStatus::Stalled => "stalled".into(),
        FitStatus::MaxIterations => "max_iterations".into(),
        FitStatus::Diverged { iteration, quantity } => format!("diverged ({quantity} at {iteration})"),
    }
}

fn summary_line(fit: &Fit, seconds: f64, n: usize) -> String {
    format!(
        "trained on {n} stars: {}, {} {}, loss {:.6e}, {:.2} s",
        status_name(&fit.status),
        fit.iterations,
        if fit.engine == "adam" { "steps" } else { "cycles" },
        fit.loss,
        seconds
    )
}

/// Pooled per-label figures over the stars with a catalogue value and a prediction.
fn metrics(data: &Training, predicted: &Array2<f64>, thresholds: &[(String, f64)]) -> Vec<LabelMetrics> {
    data.labels
        .iter()
        .enumerate()
        .map(|(l, spec)| {
            let mut d: Vec<f64> = predicted
                .column(l)
                .iter()
                .zip(data.catalogue.column(l))
                .map(|(p, c)| p - c)
                .filter(|d| d.is_finite())
                .collect();
            let threshold = thresholds.iter().find(|(n, _)| n.eq_ignore_ascii_case(&spec.name)).map(|&(_, t)| t);
            let rmse = (d.iter().map(|x| x * x).sum::<f64>() / d.len() as f64).sqrt();
            let outliers = threshold.map(|t| d.iter().filter(|x| x.abs() > t).count());
            let center = median(&mut d);
            let mut deviations: Vec<f64> = d.iter().map(|x| (x - center).abs()).collect();
            LabelMetrics {
                name: spec.name.clone(),
                n: d.len(),
                rmse,
                robust_scatter: MAD_TO_SIGMA * median(&mut deviations),
                outlier_threshold: threshold,
                outliers,
            }
        })
        .collect()
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_unstable_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 { values[n / 2] } else { 0.5 * (values[n / 2 - 1] + values[n / 2]) }
}

/// Formats the cross-validation table printed after the folds.
fn cv_table(cv: &CvSummary) -> String {
    let mut lines = vec![
        format!("{} cross-validation, {} fold(s), pooled:", cv.scheme, cv.folds),
        "| label | n | RMSE | robust scatter | outliers |".to_string(),
        "|---|---|---|---|---|".to_string(),
    ];
    for m in &cv.labels {
        let u = unit(&m.name);
        let digits = if u == "K" { 0 } else { 3 };
        let outliers = match (m.outliers, m.outlier_threshold) {
            (Some(count), Some(t)) => format!("{count} (|Δ| > {t} {u})"),
            _ => "-".to_string(),
        };
        lines.push(format!(
            "| {} | {} | {:.digits$} {u} | {:.digits$} {u} | {outliers} |",
            m.name, m.n, m.rmse, m.robust_scatter
        ));
    }
    lines.push(format!(
        "mean time per fold: fit {:.2} s, inference {:.3} s",
        cv.mean_fit_seconds, cv.mean_infer_seconds
    ));
    lines.join("\n")
}

fn write_cv_predictions(
    path: &Path,
    data: &Training,
    fold_of: &[String],
    predicted: &Array2<f64>,
    predicted_err: &Array2<f64>,
) -> Result<(), CliError> {
    let mut header = vec!["id".to_string(), "fold".to_string()];
    let mut columns = vec![fold_of.to_vec()];
    for (l, spec) in data.labels.iter().enumerate() {
        header.extend([format!("{}_catalogue", spec.name), spec.name.clone(), format!("{}_err", spec.name)]);
        columns.push(data.catalogue.column(l).iter().map(|&v| cell(v)).collect());
        columns.push(predicted.column(l).iter().map(|&v| cell(v)).collect());
        columns.push(predicted_err.column(l).iter().map(|&v| cell(v)).collect());
    }
    input::write_csv(path, &header, &data.ids, &columns)
}

fn write_plots(
    dir: &Path,
    data: &Training,
    predicted: &Array2<f64>,
    predicted_err: &Array2<f64>,
    histories: &[(String, Vec<f64>)],
    shown: &[(usize, Vec<f64>)],
) -> Result<(), CliError> {
    std::fs::create_dir_all(dir).map_err(|source| CliError::Io {
        path: dir.to_path_buf(),
        action: "cannot create the figure directory",
        source,
    })?;
    let names: Vec<String> = data
        .labels
        .iter()
        .map(|l| match unit(&l.name) {
            "" => l.name.clone(),
            u => format!("{} ({u})", l.name),
        })
        .collect();
    let columns: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> = (0..data.labels.len())
        .map(|l| (data.catalogue.column(l).to_vec(), predicted.column(l).to_vec(), predicted_err.column(l).to_vec()))
        .collect();
    let panels: Vec<LabelPanel> = names
        .iter()
        .zip(&columns)
        .map(|(name, (c, p, e))| LabelPanel {
            name,
            catalogue: c,
            predicted: p,
            predicted_err: Some(e),
        })
        .collect();
    // Each fit relative to its own minimum: the folds fit different stars, so their
    // losses differ by more than any fit's progress.
    let series: Vec<(&str, &[f64])> = histories.iter().map(|(n, h)| (n.as_str(), h.as_slice())).collect();
    let flux_err = data.preprocessing.flux_errors(&data.flux)?;
    let observed: Vec<(Vec<f64>, Vec<f64>)> =
        shown.iter().map(|(i, _)| (data.flux.row(*i).to_vec(), flux_err.row(*i).to_vec())).collect();
    let spectra: Vec<SpectrumPanel> = shown
        .iter()
        .zip(&observed)
        .map(|((i, model), (flux, err))| SpectrumPanel {
            id: &data.ids[*i],
            flux,
            model,
            flux_err: Some(err),
        })
        .collect();
    let flux_title = if data.preprocessing.normalization == SavedNormalization::None { "flux" } else { "normalized flux" };
    for extension in ["png", "svg"] {
        if !panels.is_empty() && predicted.iter().any(|v| v.is_finite()) {
            plot::one_to_one(dir.join(format!("one_to_one.{extension}")), &panels)?;
        }
        plot::loss_history_each(dir.join(format!("loss.{extension}")), &series)?;
        if !spectra.is_empty() {
            plot::spectra(dir.join(format!("spectra.{extension}")), &data.wavelength, "wavelength (Å)", flux_title, &spectra)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_outliers_cuts_only_the_far_residuals() {
        // Column 0: a symmetric core (median 0, MAD 1, robust σ 1.4826) and one
        // residual at 10. Column 1: every residual equal, so no spread to clip against.
        let core = [-2.0, -1.0, -1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 2.0];
        let mut residual = Array2::zeros((core.len() + 1, 2));
        for (i, &r) in core.iter().enumerate() {
            residual[[i, 0]] = r;
        }
        residual[[core.len(), 0]] = 10.0;
        residual.column_mut(1).fill(0.5);
        let mut ivar = Array2::ones(residual.raw_dim());
        ivar[[0, 0]] = 0.0;

        // 3 σ = 4.45: only the residual at 10 is cut; the masked one stays masked.
        assert_eq!(clip_outliers(&residual, &mut ivar, 3.0), 1);
        assert_eq!(ivar[[core.len(), 0]], 0.0);
        assert_eq!(ivar.column(0).iter().filter(|&&w| w == 0.0).count(), 2);
        assert!(ivar.column(1).iter().all(|&w| w == 1.0));

        // Nothing left beyond 3 σ: a second round cuts nothing.
        assert_eq!(clip_outliers(&residual, &mut ivar, 3.0), 0);
    }
}
