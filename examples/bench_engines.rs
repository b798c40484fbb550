//! Speed of the engines on the tutorial problem (1024 training stars, K = 8, 2 labels,
//! 128 pixels), printed as medians over repeated runs in one process.
//!
//! ```text
//! cargo run --release --example bench_engines [-- --data DIR] [-- --repeats 21]
//! ```
//!
//! Figures: the block-WLS training fit, the test-star latent solve (flux only, trained
//! parameters fixed), and one Adam step, each with one and with two threads.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use lux::dsl::simulate::linear_tutorial;
use lux::prelude::*;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "Time the lux engines on the tutorial problem")]
struct Args {
    /// Folder with label.npy, label_err.npy, flux.npy and flux_err.npy; simulated if absent.
    #[arg(long)]
    data: Option<PathBuf>,

    /// Runs per figure; the median is reported.
    #[arg(long, default_value_t = 21)]
    repeats: usize,

    /// Adam steps per timed run.
    #[arg(long, default_value_t = 500)]
    adam_steps: usize,
}

lux::lux_model! {
    model Lux(latents: K, labels: L, pixels: P) {
        latent z: [K] ~ Normal(0.0, 1.0);
        param A: [L, K] ~ Normal(0.0, 1.0);
        param B: [P, K] ~ Normal(0.0, 1.0);
        observe label: [L] ~ Normal(A * z, err);
        observe flux: [P] ~ Normal(B * z, err);
    }
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn time<T>(repeats: usize, mut run: impl FnMut() -> T) -> Duration {
    median(
        (0..repeats)
            .map(|_| {
                let started = Instant::now();
                std::hint::black_box(run());
                started.elapsed()
            })
            .collect(),
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let raw = match &args.data {
        Some(dir) => Dataset::from_npy_files(dir, &["label", "flux"])?,
        None => linear_tutorial(2048, 8, 2, 128, 8675309)?.data,
    };
    let scaler = ShiftScale::fit(&raw)?;
    let (train, test) = scaler.transform(&raw)?.split_at(1024)?;
    let flux_only = test.with_only(&["flux"])?;
    let model = Lux::new(8, 2, 128)?;

    let wls = BlockWls::new(50, 1e-6);
    let trained = wls.fit(&model, &train, &FitOptions::default())?;
    let infer = FitOptions::infer_latents(&model, &trained.params, test.n_objects());
    let adam = Adam::new(1e-3, args.adam_steps);

    println!(
        "{:<8} {:>16} {:>10} {:>16} {:>16}",
        "threads", "block WLS train", "cycles", "test-star solve", "Adam per step"
    );
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
        let (train_time, test_time, step_time) = pool.install(|| {
            let train_time = time(args.repeats, || wls.fit(&model, &train, &FitOptions::default()).unwrap());
            let test_time = time(args.repeats, || wls.fit(&model, &flux_only, &infer).unwrap());
            let adam_time = time(args.repeats.min(7), || adam.fit(&model, &train, &FitOptions::default()).unwrap());
            (train_time, test_time, adam_time / args.adam_steps as u32)
        });
        println!(
            "{:<8} {:>13.2} ms {:>10} {:>13.3} ms {:>13.3} ms",
            threads,
            train_time.as_secs_f64() * 1e3,
            trained.iterations,
            test_time.as_secs_f64() * 1e3,
            step_time.as_secs_f64() * 1e3
        );
    }
    Ok(())
}
