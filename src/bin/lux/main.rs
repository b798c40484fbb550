//! The `lux` command: `fit` trains and cross-validates a Lux model on spectra with
//! labels and saves it, `predict` infers labels for new spectra from a saved model,
//! `info` describes a model or data file.
//!
//! Exit codes: 0 on success, 1 on a runtime error (printed with its causes), 2 on a
//! usage error.

// A run builds at most one error, just before it exits, so its size does not matter.
#![allow(clippy::result_large_err)]

mod error;
mod fit;
mod info;
mod input;
mod predict;
mod progress;
mod settings;

use std::error::Error;
use std::process::ExitCode;

use clap::Parser;

use settings::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Fit(args) => fit::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Info(args) => info::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let mut printed = err.to_string();
            eprintln!("error: {printed}");
            let mut source = err.source();
            while let Some(cause) = source {
                // Messages that already quote their cause would repeat it.
                let text = cause.to_string();
                if !printed.contains(&text) {
                    eprintln!("  caused by: {text}");
                    printed = text;
                }
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}
