//! A progress bar on stderr for long runs: shown after the first second, and only when
//! stderr is a terminal.

use std::cell::Cell;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Delay before the bar appears, so short runs print only their summary lines.
const SHOW_AFTER: Duration = Duration::from_secs(1);

/// A bar counting fits; within a block-WLS fit it shows the current cycle and loss.
pub struct Progress {
    bar: ProgressBar,
    done: Arc<AtomicBool>,
    last_loss: Cell<Option<f64>>,
}

impl Progress {
    /// Creates a hidden bar over `total` fits, drawn after [`SHOW_AFTER`] on a terminal.
    pub fn new(total: u64) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} fits  {msg}")
                .expect("valid template"),
        );
        let done = Arc::new(AtomicBool::new(false));
        if std::io::stderr().is_terminal() {
            let (bar, done) = (bar.clone(), done.clone());
            std::thread::spawn(move || {
                std::thread::sleep(SHOW_AFTER);
                if !done.load(Ordering::Relaxed) {
                    bar.set_draw_target(ProgressDrawTarget::stderr());
                    bar.enable_steady_tick(Duration::from_millis(120));
                }
            });
        }
        Self {
            bar,
            done,
            last_loss: Cell::new(None),
        }
    }

    /// Names the fit now running.
    pub fn stage(&self, message: String) {
        match self.last_loss.get() {
            Some(loss) => self.bar.set_message(format!("{message} (previous fit: loss {loss:.6e})")),
            None => self.bar.set_message(message),
        }
    }

    /// Returns an observer for a block-WLS fit that shows `stage`, the cycle and the
    /// current loss on the bar.
    pub fn cycle_observer(&self, stage: String) -> lux::infer::CycleObserver {
        let bar = self.bar.clone();
        lux::infer::CycleObserver(Arc::new(move |cycle, loss| {
            bar.set_message(format!("{stage}: cycle {cycle}, loss {loss:.6e}"));
        }))
    }

    /// Counts one fit as done and keeps its final loss for the next message.
    pub fn fit_done(&self, loss: f64) {
        self.bar.inc(1);
        self.last_loss.set(Some(loss));
    }

    /// Prints a line to stdout without tearing the bar.
    pub fn println(&self, line: impl AsRef<str>) {
        self.bar.suspend(|| println!("{}", line.as_ref()));
    }

    pub fn finish(&self) {
        self.done.store(true, Ordering::Relaxed);
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
