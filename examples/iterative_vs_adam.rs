//! The tutorial end to end: a Lux model of labels and spectra fitted by block WLS and
//! by Adam, then applied to test stars that have a spectrum only.
//!
//! ```text
//! cargo run --release --example iterative_vs_adam              # simulated set
//! cargo run --release --example iterative_vs_adam -- --data DIR   # exported .npy set
//! cargo run --release --example iterative_vs_adam -- --json
//! ```
//!
//! All fitting, losses and RMSEs are in preprocessed units (per-column mean removed and
//! divided by the population standard deviation over all stars).

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use lux::dsl::ndarray::Array2;
use lux::dsl::simulate::linear_tutorial;
use lux::prelude::*;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "Fit the Lux tutorial model with block WLS and with Adam, and compare them")]
struct Args {
    /// Folder with label.npy, label_err.npy, flux.npy and flux_err.npy (raw, N rows);
    /// without it a set of 2048 stars is simulated.
    #[arg(long)]
    data: Option<PathBuf>,

    /// Print the figures as one JSON object instead of a table.
    #[arg(long)]
    json: bool,

    /// Number of training stars (the first rows); the rest are test stars.
    #[arg(long, default_value_t = 1024)]
    n_train: usize,

    /// Adam steps for training.
    #[arg(long, default_value_t = 10_000)]
    adam_steps: usize,

    /// Adam steps for the test stars' latents.
    #[arg(long, default_value_t = 2_000)]
    adam_test_steps: usize,

    /// Seed of the simulation and of both engines' random starts.
    #[arg(long, default_value_t = 8675309)]
    seed: u64,
}

lux::lux_model! {
    /// Lux: labels and spectra, both linear in one latent vector per star.
    model Lux(latents: K, labels: L, pixels: P) {
        latent z: [K] ~ Normal(0.0, 1.0);
        param A: [L, K] ~ Normal(0.0, 1.0);
        param B: [P, K] ~ Normal(0.0, 1.0);
        observe label: [L] ~ Normal(A * z, err);
        observe flux: [P] ~ Normal(B * z, err);
    }
}

/// Figures of one engine.
struct Row {
    fit: Fit,
    test_seconds: f64,
    label_rmse: f64,
    flux_rmse: f64,
}

fn rmse(predicted: &Array2<f64>, observed: &Array2<f64>) -> f64 {
    let sum: f64 = predicted.iter().zip(observed).map(|(p, o)| (p - o) * (p - o)).sum();
    (sum / predicted.len() as f64).sqrt()
}

fn run(
    model: &Lux,
    train: &Dataset,
    test: &Dataset,
    trainer: &dyn Engine,
    tester: &dyn Engine,
    seed: u64,
) -> Result<Row, Box<dyn std::error::Error>> {
    let fit = trainer.fit(model, train, &FitOptions::default().seed(seed))?;

    let flux_only = test.with_only(&["flux"])?;
    let started = Instant::now();
    let inferred = tester.fit(model, &flux_only, &FitOptions::infer_latents(model, &fit.params, test.n_objects()))?;
    let test_seconds = started.elapsed().as_secs_f64();

    let predicted = model.predict(&inferred.params)?;
    Ok(Row {
        label_rmse: rmse(&predicted["label"], test.require("label")?.values()),
        flux_rmse: rmse(&predicted["flux"], test.require("flux")?.values()),
        test_seconds,
        fit,
    })
}

fn main() -> std::process::ExitCode {
    match run_tutorial(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_tutorial(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let raw = match &args.data {
        Some(dir) => Dataset::from_npy_files(dir, &["label", "flux"])?,
        None => linear_tutorial(2048, 8, 2, 128, args.seed)?.data,
    };
    let scaler = ShiftScale::fit(&raw)?;
    let (train, test) = scaler.transform(&raw)?.split_at(args.n_train)?;

    let n_labels = train.require("label")?.size();
    let n_pixels = train.require("flux")?.size();
    let model = Lux::new(8, n_labels, n_pixels)?;

    let wls = BlockWls::new(50, 1e-6);
    let block_wls = run(&model, &train, &test, &wls, &wls, args.seed)?;
    let adam = run(
        &model,
        &train,
        &test,
        &Adam::new(1e-3, args.adam_steps),
        &Adam::new(1e-3, args.adam_test_steps),
        args.seed,
    )?;

    if args.json {
        let figures = |row: &Row| {
            serde_json::json!({
                "final_loss": row.fit.loss,
                "iterations": row.fit.iterations,
                "converged": row.fit.converged(),
                "max_abs_grad": row.fit.max_abs_grad,
                "fit_seconds": row.fit.wall_time.as_secs_f64(),
                "test_seconds": row.test_seconds,
                "test_label_rmse": row.label_rmse,
                "test_flux_rmse": row.flux_rmse,
            })
        };
        let out = serde_json::json!({ "block_wls": figures(&block_wls), "adam": figures(&adam) });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }

    println!(
        "{} training stars, {} test stars, {} labels, {} pixels, K = 8",
        train.n_objects(),
        test.n_objects(),
        n_labels,
        n_pixels
    );
    println!(
        "{:<10} {:>10} {:>14} {:>15} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "method", "fit time", "cycles/steps", "final loss", "max|grad|", "converged", "test time", "label RMSE", "flux RMSE"
    );
    for (name, row) in [("block WLS", &block_wls), ("Adam", &adam)] {
        println!(
            "{:<10} {:>9.3}s {:>14} {:>15.2} {:>10.2e} {:>10} {:>9.4}s {:>10.5} {:>10.5}",
            name,
            row.fit.wall_time.as_secs_f64(),
            row.fit.iterations,
            row.fit.loss,
            row.fit.max_abs_grad,
            if row.fit.converged() { "yes" } else { "no" },
            row.test_seconds,
            row.label_rmse,
            row.flux_rmse
        );
    }
    println!();
    println!("final loss: negative log posterior of the training fit (lower is better; compare rows, not absolute values).");
    println!("RMSEs: test stars, in units of each column's standard deviation over all stars, all columns pooled.");
    println!("converged: the loss stopped changing and the largest gradient element is below 1e-2.");
    Ok(())
}
