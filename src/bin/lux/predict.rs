//! `lux predict`: labels for new spectra from a saved model.

use std::time::Instant;

use lux::dsl::io::write_array;
use lux::dsl::ndarray::{Array1, Array2, concatenate, Axis};
use lux::saved::{SavedError, SavedModel};
use lux::survey::{SpectraSet, interpolate};

use crate::error::CliError;
use crate::fit::{name_star, status_name};
use crate::input;
use crate::settings::PredictArgs;

pub fn run(args: &PredictArgs) -> Result<(), CliError> {
    let extension = |p: &std::path::Path| p.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
    if let Some(path) = &args.out {
        if !matches!(extension(path).as_deref(), Some("csv" | "npy")) {
            return Err(CliError::Option {
                option: "--out",
                value: path.display().to_string(),
                reason: "name a .csv or a .npy file".into(),
            });
        }
    }
    let saved = SavedModel::load(&args.model)?;
    let grid = Array1::from(saved.preprocessing.input_wavelength.clone());
    let paths = input::spectrum_paths(&args.input)?;

    // Every spectrum on the model's input grid: as read, or resampled when allowed.
    let tolerance = 1e-4 * pixel_width(&grid);
    let mut flux = Array2::zeros((paths.len(), grid.len()));
    let mut ids = Vec::with_capacity(paths.len());
    let mut resampled = Vec::new();
    for (i, (path, spectrum)) in input::read_spectra(&paths)?.into_iter().enumerate() {
        let (wavelength, values) = increasing(spectrum.wavelength, spectrum.flux);
        let same = wavelength.len() == grid.len() && wavelength.iter().zip(&grid).all(|(a, b)| (a - b).abs() <= tolerance);
        if same {
            flux.row_mut(i).assign(&values);
        } else if args.resample {
            flux.row_mut(i).assign(&interpolate(wavelength.view(), values.view(), grid.view()));
            resampled.push(spectrum.id.clone());
        } else {
            return Err(CliError::Grid {
                path,
                found: wavelength.len(),
                found_lo: wavelength.first().copied().unwrap_or(f64::NAN),
                found_hi: wavelength.last().copied().unwrap_or(f64::NAN),
                expected: grid.len(),
                expected_lo: grid.first().copied().unwrap_or(f64::NAN),
                expected_hi: grid.last().copied().unwrap_or(f64::NAN),
            });
        }
        ids.push(spectrum.id);
    }
    if !resampled.is_empty() {
        eprintln!("resampled {} spectra onto the model's wavelength grid", resampled.len());
    }
    let spectra = SpectraSet {
        ids,
        wavelength: grid,
        flux,
        resampled,
    };

    let started = Instant::now();
    let prediction = saved.predict(&spectra).map_err(|err| match err {
        SavedError::Fit(fit) => name_star(fit, "inferring latents", |row| spectra.ids[row].clone(), &saved.wavelength),
        other => other.into(),
    })?;
    let n = spectra.n_spectra();
    eprintln!(
        "inferred the latents of {n} spectr{}: {}, {} cycle{}, {:.3} s",
        if n == 1 { "um" } else { "a" },
        status_name(&prediction.inference.status),
        prediction.inference.iterations,
        if prediction.inference.iterations == 1 { "" } else { "s" },
        started.elapsed().as_secs_f64()
    );

    match &args.out {
        Some(path) if extension(path).as_deref() == Some("npy") => {
            let table = concatenate(Axis(1), &[prediction.values.view(), prediction.errors.view()])
                .expect("same number of rows");
            write_array(path, &table)?;
            eprintln!("wrote labels and their uncertainties to {}", path.display());
        }
        Some(path) => {
            let (header, columns) = input::prediction_columns(&prediction.names, &prediction.values, &prediction.errors);
            let header: Vec<String> = std::iter::once("id".to_string()).chain(header).collect();
            input::write_csv(path, &header, &spectra.ids, &columns)?;
            eprintln!("wrote labels and their uncertainties to {}", path.display());
        }
        None => {
            let (header, columns) = input::prediction_columns(&prediction.names, &prediction.values, &prediction.errors);
            let header: Vec<String> = std::iter::once("id".to_string()).chain(header).collect();
            print!("{}", input::csv_text(&header, &spectra.ids, &columns));
        }
    }
    if let Some(path) = &args.reconstruct {
        write_array(path, &prediction.reconstruction)?;
        eprintln!("wrote model spectra to {}", path.display());
    }
    Ok(())
}

/// Reverses a spectrum stored with decreasing wavelength.
fn increasing(wavelength: Array1<f64>, flux: Array1<f64>) -> (Array1<f64>, Array1<f64>) {
    let n = wavelength.len();
    if n > 1 && wavelength[0] > wavelength[n - 1] {
        (wavelength.iter().rev().copied().collect(), flux.iter().rev().copied().collect())
    } else {
        (wavelength, flux)
    }
}

fn pixel_width(wavelength: &Array1<f64>) -> f64 {
    let n = wavelength.len();
    if n < 2 { 1.0 } else { (wavelength[n - 1] - wavelength[0]) / (n - 1) as f64 }
}
