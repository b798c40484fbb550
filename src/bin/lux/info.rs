//! `lux info`: describes what a model or data file contains.

use std::fs::File;
use std::path::Path;

use lux::dsl::ndarray::ArrayD;
use lux::saved::{LabelTransform, SavedModel};
use lux::survey::{self, ColumnData, SurveyError};
use ndarray_npy::{NpzReader, ReadNpyExt};

use crate::error::CliError;
use crate::input::unit;
use crate::settings::InfoArgs;

pub fn run(args: &InfoArgs) -> Result<(), CliError> {
    let path = args.file.as_path();
    let extension = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    match extension.as_str() {
        "json" => model_info(path),
        "fits" | "fit" | "fts" => fits_info(path),
        "npy" => {
            let file = File::open(path).map_err(|source| io(path, source))?;
            let array = ArrayD::<f64>::read_npy(file).map_err(|e| npy(path, e.to_string()))?;
            println!("{}: .npy array, float64, shape {:?}", path.display(), array.shape());
            Ok(())
        }
        "npz" => {
            let mut npz = NpzReader::new(File::open(path).map_err(|source| io(path, source))?)
                .map_err(|e| npy(path, e.to_string()))?;
            println!("{}: .npz archive", path.display());
            for name in npz.names().map_err(|e| npy(path, e.to_string()))? {
                let array: Result<ArrayD<f64>, _> = npz.by_name(&name);
                match array {
                    Ok(a) => println!("  {name}: float64, shape {:?}", a.shape()),
                    Err(_) => println!("  {name}: not a float64 array"),
                }
            }
            Ok(())
        }
        "csv" | "db" => {
            let table = survey::read_labels(path)?;
            println!("{}: table of {} rows", path.display(), table.n_rows());
            println!("  id column: first ({} ids, e.g. {})", table.ids.len(), table.ids.first().map_or("-", String::as_str));
            for (j, name) in table.names.iter().enumerate() {
                let column = table.values.column(j);
                let finite: Vec<f64> = column.iter().copied().filter(|v| v.is_finite()).collect();
                let (lo, hi) = finite.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
                println!("  {name}: {} values ({} missing), {lo} to {hi} {}", finite.len(), column.len() - finite.len(), unit(name));
            }
            Ok(())
        }
        _ => Err(CliError::UnknownFileType { path: path.to_path_buf() }),
    }
}

fn io(path: &Path, source: std::io::Error) -> CliError {
    CliError::Io {
        path: path.to_path_buf(),
        action: "cannot read the file",
        source,
    }
}

fn npy(path: &Path, message: String) -> CliError {
    SurveyError::Npy {
        path: path.to_path_buf(),
        message,
    }
    .into()
}

fn model_info(path: &Path) -> Result<(), CliError> {
    let m = SavedModel::load(path)?;
    println!("{}: lux model, format {} version {}, kind `{}`", path.display(), m.format, m.version, m.kind);
    let form = if m.kind == lux::saved::KIND_CANNON {
        "labels = y, flux = theta · poly(y, 2)"
    } else if m.model.bias {
        "labels = A z + a, flux = B z + b"
    } else {
        "labels = A z, flux = B z"
    };
    println!(
        "  dims: {} latents, {} labels, {} pixels; {form}; intrinsic scatter {}",
        m.dims.latents, m.dims.labels, m.dims.pixels, m.model.scatter
    );
    let labels: Vec<String> = m
        .labels
        .iter()
        .map(|l| match l.transform {
            LabelTransform::Identity => l.name.clone(),
            LabelTransform::Log10 => format!("{} (fitted as log10)", l.name),
        })
        .collect();
    println!("  labels: {}", labels.join(", "));
    println!(
        "  wavelength: {:.2} to {:.2} Å, {} pixels",
        m.wavelength.first().copied().unwrap_or(f64::NAN),
        m.wavelength.last().copied().unwrap_or(f64::NAN),
        m.wavelength.len()
    );
    let p = &m.preprocessing;
    let window = p.window.map_or("none".to_string(), |[lo, hi]| format!("{lo} to {hi} Å"));
    println!(
        "  preprocessing: input grid {} pixels from {:.2} Å, window {window}, bin {}, normalization {:?}, \
         non-positive pixels {}, assumed S/N {} (error floor {} of the median)",
        p.input_wavelength.len(),
        p.input_wavelength.first().copied().unwrap_or(f64::NAN),
        p.bin,
        p.normalization,
        if p.mask_nonpositive { "masked" } else { "kept" },
        p.snr,
        p.error_floor
    );
    let f = &m.fit;
    println!(
        "  fit: {} on {} stars, {}, {} cycles, loss {:.6e}, max |grad| {:.3e}, {:.2} s, seed {}",
        f.engine, f.n_train, f.status, f.cycles, f.loss, f.max_abs_grad, f.seconds, f.seed
    );
    if m.kind != lux::saved::KIND_CANNON {
        println!("  label-map covariance: {}", if m.label_map_covariance.is_some() { "saved" } else { "absent" });
    }
    match &m.label_model_error {
        Some(errors) => println!(
            "  label model error (added in quadrature to predicted uncertainties, fitted units): {}",
            m.labels.iter().zip(errors).map(|(l, e)| format!("{} {e:.4}", l.name)).collect::<Vec<_>>().join(", ")
        ),
        None => println!("  label model error: none (no cross-validation; uncertainties assume the model is right)"),
    }
    if let Some(cv) = &f.cv {
        println!("  validation: {}, {} fold(s); mean fit {:.2} s, inference {:.3} s", cv.scheme, cv.folds, cv.mean_fit_seconds, cv.mean_infer_seconds);
        for l in &cv.labels {
            let u = unit(&l.name);
            let outliers = match (l.outliers, l.outlier_threshold) {
                (Some(count), Some(t)) => format!("{count} with |Δ| > {t} {u}"),
                _ => "not counted".to_string(),
            };
            println!(
                "    {}: n {}, RMSE {:.4} {u}, robust scatter {:.4} {u}, outliers {outliers}",
                l.name, l.n, l.rmse, l.robust_scatter
            );
        }
    }
    Ok(())
}

fn fits_info(path: &Path) -> Result<(), CliError> {
    match survey::read_spectrum(path) {
        Ok(s) => {
            let n = s.wavelength.len();
            let step = if n > 1 { (s.wavelength[n - 1] - s.wavelength[0]) / (n - 1) as f64 } else { f64::NAN };
            let finite = s.flux.iter().filter(|v| v.is_finite()).count();
            println!("{}: 1-D spectrum `{}`, {n} pixels ({finite} finite)", path.display(), s.id);
            println!(
                "  linear wavelength WCS: {:.3} to {:.3} Å in steps of {:.4} Å",
                s.wavelength.first().copied().unwrap_or(f64::NAN),
                s.wavelength.last().copied().unwrap_or(f64::NAN),
                step
            );
            Ok(())
        }
        Err(SurveyError::NoImage { .. }) => {
            let table = survey::read_table(path)?;
            println!("{}: binary table of {} rows", path.display(), table.n_rows);
            for column in &table.columns {
                match &column.data {
                    ColumnData::Numeric(a) => println!("  {}: numeric, {} per row", column.name, a.ncols()),
                    ColumnData::Text(_) => println!("  {}: text", column.name),
                }
            }
            Ok(())
        }
        Err(other) => Err(other.into()),
    }
}
