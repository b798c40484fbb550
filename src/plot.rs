//! Figures of a fit: predicted against catalogue labels, loss per iteration, and
//! observed against model spectra.
//!
//! Each function writes one file, PNG or SVG by the extension of `path`. The figure is
//! written to a temporary file in the same directory and renamed over `path` at the end,
//! so a failed call leaves no half-written figure behind. PNG text is rasterized from the
//! DejaVu Sans font compiled into the library (`assets/fonts`), so no system font library
//! is needed. SVG text names the family `sans-serif`, and the viewer picks the font.
//! Axis titles and units come from the caller.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

/// DejaVu Sans (Bitstream Vera licence, in `assets/fonts/LICENSE-DejaVu.txt`).
static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// The font family of every text element, under which the bundled font is registered.
const FAMILY: &str = "sans-serif";

/// Robust scatter is this factor times the median absolute deviation: the standard
/// deviation for Gaussian residuals.
pub const MAD_TO_SIGMA: f64 = 1.4826;

/// Fill colours of series, in the order they are used.
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

const GREY: RGBColor = RGBColor(120, 120, 120);

/// Observed flux and residuals: near black, apart from the black axes.
const OBSERVED: RGBColor = RGBColor(25, 25, 25);

const CAPTION_PX: u32 = 22;
const AXIS_TITLE_PX: u32 = 18;
const TICK_PX: u32 = 14;
const NOTE_PX: u32 = 15;

/// An error that stopped a figure from being written. Every variant names the output path.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The directory of the output file does not exist.
    #[error("cannot write plot {path}: directory {dir} does not exist; create it first")]
    MissingDirectory { path: PathBuf, dir: PathBuf },

    /// The extension of the output file is neither `.png` nor `.svg`.
    #[error("cannot write plot {path}: unknown file type; name it *.png or *.svg")]
    UnsupportedFormat { path: PathBuf },

    /// Two inputs of one figure that must be of equal length are not.
    #[error("plot {path}: {what} has {got} values but {expected} were expected")]
    LengthMismatch {
        path: PathBuf,
        what: String,
        got: usize,
        expected: usize,
    },

    /// The figure has no panel or series to draw.
    #[error("plot {path}: nothing to draw; pass at least one {what}")]
    Empty { path: PathBuf, what: &'static str },

    /// plotters failed while drawing or encoding.
    #[error("cannot draw plot {path}: {message}")]
    Draw { path: PathBuf, message: String },

    /// Writing or renaming the file failed.
    #[error("cannot write plot {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// The bundled font did not parse, so the library was built with a damaged font file.
    #[error("the bundled font assets/fonts/DejaVuSans.ttf is not a valid TrueType font")]
    Font,
}

/// One label of a one-to-one figure: predictions for the same objects as the catalogue.
#[derive(Debug, Clone, Copy)]
pub struct LabelPanel<'a> {
    /// Label and unit as shown on the axes, e.g. `"Teff (K)"`.
    pub name: &'a str,
    /// Catalogue (reference) values, one per object.
    pub catalogue: &'a [f64],
    /// Predicted values, one per object.
    pub predicted: &'a [f64],
    /// 1-sigma uncertainty of each prediction, drawn as a vertical error bar.
    pub predicted_err: Option<&'a [f64]>,
}

/// Agreement of predicted with catalogue values, over the pairs where both are finite.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelStats {
    /// Pairs used.
    pub n: usize,
    /// Pairs skipped because either value is not finite.
    pub skipped: usize,
    /// Mean of predicted − catalogue.
    pub bias: f64,
    /// Root mean square of predicted − catalogue.
    pub rmse: f64,
    /// [`MAD_TO_SIGMA`] times the median absolute deviation of predicted − catalogue
    /// from its median.
    pub robust_scatter: f64,
}

/// One star of a spectra figure. All slices have one value per pixel.
#[derive(Debug, Clone, Copy)]
pub struct SpectrumPanel<'a> {
    /// Star id, shown as the panel title.
    pub id: &'a str,
    /// Observed flux, with gaps at non-finite pixels.
    pub flux: &'a [f64],
    /// The model's reconstruction, with gaps at non-finite pixels.
    pub model: &'a [f64],
    /// 1-sigma flux errors. When given, the residual strip shows
    /// (observed − model) / error, and pixels whose error is not finite and positive
    /// (masked) are gaps in both the flux and the residual.
    pub flux_err: Option<&'a [f64]>,
}

/// Computes bias, RMSE and robust scatter of `predicted − catalogue`, skipping pairs where
/// either is not finite. With no finite pair, the statistics are NaN and `n` is 0.
///
/// # Panics
/// If the slices differ in length.
pub fn label_stats(catalogue: &[f64], predicted: &[f64]) -> LabelStats {
    assert_eq!(
        catalogue.len(),
        predicted.len(),
        "label_stats: catalogue and predicted differ in length"
    );

    let diffs: Vec<f64> = catalogue
        .iter()
        .zip(predicted)
        .filter(|(c, p)| c.is_finite() && p.is_finite())
        .map(|(c, p)| p - c)
        .collect();
    let n = diffs.len();
    let skipped = catalogue.len() - n;
    if n == 0 {
        return LabelStats {
            n,
            skipped,
            bias: f64::NAN,
            rmse: f64::NAN,
            robust_scatter: f64::NAN,
        };
    }

    let bias = diffs.iter().sum::<f64>() / n as f64;
    let rmse = (diffs.iter().map(|d| d * d).sum::<f64>() / n as f64).sqrt();

    let centre = median(diffs.clone());
    let deviations = diffs.iter().map(|d| (d - centre).abs()).collect();
    let robust_scatter = MAD_TO_SIGMA * median(deviations);

    LabelStats {
        n,
        skipped,
        bias,
        rmse,
        robust_scatter,
    }
}

/// Formats the statistics printed in a one-to-one panel, one string per line.
pub fn stats_lines(stats: &LabelStats) -> Vec<String> {
    let mut n_line = format!("N = {}", stats.n);
    if stats.skipped > 0 {
        n_line.push_str(&format!(" ({} NaN skipped)", stats.skipped));
    }
    vec![
        format!("bias = {}", format_sig(stats.bias)),
        format!("RMSE = {}", format_sig(stats.rmse)),
        format!("robust σ = {}", format_sig(stats.robust_scatter)),
        n_line,
    ]
}

/// Formats `x` to three significant digits, in scientific notation outside [1e-3, 1e5).
pub fn format_sig(x: f64) -> String {
    if !x.is_finite() {
        return "NaN".to_string();
    }
    if x == 0.0 {
        return "0".to_string();
    }
    let magnitude = x.abs().log10().floor() as i32;
    if !(-3..5).contains(&magnitude) {
        return format!("{x:.2e}");
    }
    let decimals = (2 - magnitude).max(0) as usize;
    format!("{x:.decimals$}")
}

/// Predicted against catalogue values, one square panel per label, three to a row.
///
/// Each panel has the one-to-one line, equal ranges on both axes, error bars when
/// `predicted_err` is given, and the text of [`stats_lines`]. Pairs where either value is
/// not finite are skipped and counted.
pub fn one_to_one(path: impl AsRef<Path>, labels: &[LabelPanel<'_>]) -> Result<(), PlotError> {
    let path = path.as_ref();
    if labels.is_empty() {
        return Err(PlotError::Empty {
            path: path.to_path_buf(),
            what: "label panel",
        });
    }
    for label in labels {
        let expected = label.catalogue.len();
        check_len(
            path,
            &format!("predicted {}", label.name),
            label.predicted,
            expected,
        )?;
        if let Some(err) = label.predicted_err {
            check_len(
                path,
                &format!("predicted_err {}", label.name),
                err,
                expected,
            )?;
        }
    }

    const PANEL_PX: u32 = 480;
    let columns = labels.len().min(3);
    let rows = labels.len().div_ceil(3);
    let size = (PANEL_PX * columns as u32, PANEL_PX * rows as u32);

    render(
        path,
        size,
        &Figure::OneToOne {
            labels,
            rows,
            columns,
        },
    )
}

/// Loss against iteration for one or more fits, on a log axis.
///
/// The loss is a negative log posterior and may be negative, so every series is drawn as
/// `loss − min + ε`, with `min` over all series (so fits stay comparable) and
/// ε = 1e-6 × (max − min), or 1 when all losses are equal. The y-axis title gives ε.
/// Non-finite losses are gaps.
pub fn loss_history(path: impl AsRef<Path>, series: &[(&str, &[f64])]) -> Result<(), PlotError> {
    draw_loss_history(path.as_ref(), series, false)
}

/// Loss against iteration for fits of different data (the folds of a cross-validation),
/// each drawn as `loss − its own minimum + ε` on a log axis, so that every fit's
/// progress shows whatever its loss level. ε = 1e-6 × the largest drop of any series.
pub fn loss_history_each(path: impl AsRef<Path>, series: &[(&str, &[f64])]) -> Result<(), PlotError> {
    draw_loss_history(path.as_ref(), series, true)
}

fn draw_loss_history(path: &Path, series: &[(&str, &[f64])], per_fit: bool) -> Result<(), PlotError> {
    let finite = || {
        series
            .iter()
            .flat_map(|(_, l)| l.iter().copied())
            .filter(|v| v.is_finite())
    };
    let (Some(min), Some(max)) = (finite().reduce(f64::min), finite().reduce(f64::max)) else {
        return Err(PlotError::Empty {
            path: path.to_path_buf(),
            what: "series with a finite loss",
        });
    };
    // The largest span any drawn series has above its shift.
    let span = if per_fit {
        series
            .iter()
            .filter_map(|(_, l)| {
                let values = || l.iter().copied().filter(|v| v.is_finite());
                Some(values().reduce(f64::max)? - values().reduce(f64::min)?)
            })
            .fold(0.0, f64::max)
    } else {
        max - min
    };
    let epsilon = if span > 0.0 { 1e-6 * span } else { 1.0 };
    let y_lo = epsilon / 2.0;
    let y_hi = (span + epsilon) * 2.0;
    let n_max = series.iter().map(|(_, l)| l.len()).max().unwrap_or(1);
    let x_hi = (n_max.max(2) - 1) as f64;

    let scale = LossScale {
        min,
        per_fit,
        epsilon,
        x_hi,
        y: y_lo..y_hi,
    };
    render(path, (900, 600), &Figure::Loss { series, scale })
}

/// Observed flux and model for a few stars, one panel per star stacked vertically, each
/// with a residual strip below and the star id as its title.
///
/// `wavelength` has one value per pixel. `wavelength_title` and `flux_title` are the axis
/// titles (e.g. `"wavelength (Å)"`, `"normalized flux"`). Missing pixels are gaps, never
/// lines to zero.
pub fn spectra(
    path: impl AsRef<Path>,
    wavelength: &[f64],
    wavelength_title: &str,
    flux_title: &str,
    panels: &[SpectrumPanel<'_>],
) -> Result<(), PlotError> {
    let path = path.as_ref();
    if panels.is_empty() {
        return Err(PlotError::Empty {
            path: path.to_path_buf(),
            what: "spectrum panel",
        });
    }
    let n_pixels = wavelength.len();
    for panel in panels {
        check_len(path, &format!("flux of {}", panel.id), panel.flux, n_pixels)?;
        check_len(
            path,
            &format!("model of {}", panel.id),
            panel.model,
            n_pixels,
        )?;
        if let Some(err) = panel.flux_err {
            check_len(path, &format!("flux_err of {}", panel.id), err, n_pixels)?;
        }
    }
    let Some(x_range) = padded_range(wavelength.iter().copied(), 0.0) else {
        return Err(PlotError::Empty {
            path: path.to_path_buf(),
            what: "finite wavelength",
        });
    };

    const PANEL_PX: u32 = 400;
    let size = (1200, PANEL_PX * panels.len() as u32);

    let figure = Figure::Spectra {
        wavelength,
        x_range,
        wavelength_title,
        flux_title,
        panels,
    };
    render(path, size, &figure)
}

/// A figure and its inputs, so that one generic function draws it on either backend.
enum Figure<'a, 'b> {
    OneToOne {
        labels: &'a [LabelPanel<'b>],
        rows: usize,
        columns: usize,
    },
    Loss {
        series: &'a [(&'b str, &'b [f64])],
        scale: LossScale,
    },
    Spectra {
        wavelength: &'a [f64],
        x_range: std::ops::Range<f64>,
        wavelength_title: &'a str,
        flux_title: &'a str,
        panels: &'a [SpectrumPanel<'b>],
    },
}

/// The shift and axis ranges of a loss figure.
struct LossScale {
    min: f64,
    /// Whether each series is shifted by its own minimum instead of `min`.
    per_fit: bool,
    epsilon: f64,
    x_hi: f64,
    y: std::ops::Range<f64>,
}

fn draw_figure<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    figure: &Figure<'_, '_>,
) -> Result<(), String> {
    match figure {
        Figure::OneToOne {
            labels,
            rows,
            columns,
        } => {
            let areas = root.split_evenly((*rows, *columns));
            for (label, area) in labels.iter().zip(&areas) {
                draw_one_to_one_panel(area, label)?;
            }
            Ok(())
        }
        Figure::Loss { series, scale } => draw_loss(root, series, scale),
        Figure::Spectra {
            wavelength,
            x_range,
            wavelength_title,
            flux_title,
            panels,
        } => {
            let areas = root.split_evenly((panels.len(), 1));
            for (panel, area) in panels.iter().zip(&areas) {
                let titles = (*wavelength_title, *flux_title);
                draw_spectrum_panel(area, wavelength, x_range.clone(), titles, panel)?;
            }
            Ok(())
        }
    }
}

fn draw_loss<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    series: &[(&str, &[f64])],
    scale: &LossScale,
) -> Result<(), String> {
    let LossScale {
        min, per_fit, epsilon, x_hi, ..
    } = *scale;
    let y_title = if per_fit {
        format!("loss − minimum of its fit + {}", format_sig(epsilon))
    } else {
        format!("loss − min(loss) + {}", format_sig(epsilon))
    };
    let mut chart = ChartBuilder::on(root)
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..x_hi, scale.y.clone().log_scale())
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("iteration")
        .y_desc(y_title.as_str())
        .x_label_formatter(&|x| format_tick(*x))
        .y_label_formatter(&|y| format_tick(*y))
        .label_style(font(TICK_PX))
        .axis_desc_style(font(AXIS_TITLE_PX))
        .light_line_style(WHITE)
        .draw()
        .map_err(draw_err)?;

    for (i, (name, losses)) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let shift = if per_fit {
            losses.iter().copied().filter(|v| v.is_finite()).reduce(f64::min).unwrap_or(min)
        } else {
            min
        };
        let points = losses
            .iter()
            .enumerate()
            .map(move |(k, l)| (k as f64, l - shift + epsilon));
        for (j, run) in finite_runs(points).into_iter().enumerate() {
            let drawn = chart
                .draw_series(run_series(run, colour.stroke_width(2)))
                .map_err(draw_err)?;
            if j == 0 {
                drawn
                    .label(*name)
                    .legend(move |(x, y)| legend_line(x, y, colour));
            }
        }
    }

    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(font(NOTE_PX))
        .background_style(WHITE.mix(0.85))
        .border_style(GREY)
        .draw()
        .map_err(draw_err)?;
    Ok(())
}

fn draw_one_to_one_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    label: &LabelPanel<'_>,
) -> Result<(), String> {
    let stats = label_stats(label.catalogue, label.predicted);
    let pairs: Vec<(usize, f64, f64)> = label
        .catalogue
        .iter()
        .zip(label.predicted)
        .enumerate()
        .filter(|(_, (c, p))| c.is_finite() && p.is_finite())
        .map(|(i, (c, p))| (i, *c, *p))
        .collect();

    let values = pairs.iter().flat_map(|(_, c, p)| [*c, *p]);
    let range = padded_range(values, 0.05).unwrap_or(0.0..1.0);
    let (lo, hi) = (range.start, range.end);

    // Equal label areas left and below, and a right margin as tall as the caption, keep
    // the plotting area square.
    let mut chart = ChartBuilder::on(area)
        .caption(label.name, font(CAPTION_PX))
        .margin_top(8)
        .margin_left(8)
        .margin_bottom(8)
        .margin_right(8 + CAPTION_PX + 8)
        .x_label_area_size(62)
        .y_label_area_size(62)
        .build_cartesian_2d(range.clone(), range.clone())
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc(format!("catalogue {}", label.name))
        .y_desc(format!("predicted {}", label.name))
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&|x| format_tick(*x))
        .y_label_formatter(&|y| format_tick(*y))
        .label_style(font(TICK_PX))
        .axis_desc_style(font(AXIS_TITLE_PX))
        .light_line_style(WHITE)
        .draw()
        .map_err(draw_err)?;

    chart
        .draw_series(LineSeries::new([(lo, lo), (hi, hi)], GREY.stroke_width(1)))
        .map_err(draw_err)?;

    let colour = PALETTE[0];
    if let Some(err) = label.predicted_err {
        let bars = pairs.iter().filter_map(|&(i, c, p)| {
            let e = err[i];
            (e.is_finite() && e > 0.0).then(|| {
                let bottom = (p - e).max(lo);
                let top = (p + e).min(hi);
                PathElement::new([(c, bottom), (c, top)], colour.mix(0.5).stroke_width(1))
            })
        });
        chart.draw_series(bars).map_err(draw_err)?;
    }
    // Smaller, fainter points when there are many, so that density still shows.
    let (radius, opacity) = if pairs.len() > 2000 {
        (1, 0.35)
    } else {
        (2, 0.7)
    };
    let points = pairs
        .iter()
        .map(|&(_, c, p)| Circle::new((c, p), radius, colour.mix(opacity).filled()));
    chart.draw_series(points).map_err(draw_err)?;

    // Statistics in the upper left corner of the plotting area. Text drawn on `area` is
    // placed relative to the corner of `area`, not of the figure.
    let (plot_x, plot_y) = chart.plotting_area().get_base_pixel();
    let (area_x, area_y) = area.get_base_pixel();
    let (x0, y0) = (plot_x - area_x, plot_y - area_y);
    let line_px = NOTE_PX as i32 + 4;
    let lines = stats_lines(&stats);
    let widest = lines
        .iter()
        .map(|l| font(NOTE_PX).font.box_size(l).map_or(0, |(w, _)| w as i32))
        .max()
        .unwrap_or(0);
    let corner = (x0 + 2, y0 + 2);
    let opposite = (x0 + 14 + widest, y0 + 10 + lines.len() as i32 * line_px);
    area.draw(&Rectangle::new(
        [corner, opposite],
        WHITE.mix(0.85).filled(),
    ))
    .map_err(draw_err)?;
    for (k, line) in lines.iter().enumerate() {
        let position = (x0 + 8, y0 + 6 + k as i32 * line_px);
        area.draw(&Text::new(line.clone(), position, font(NOTE_PX)))
            .map_err(draw_err)?;
    }
    Ok(())
}

fn draw_spectrum_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    wavelength: &[f64],
    x_range: std::ops::Range<f64>,
    (wavelength_title, flux_title): (&str, &str),
    panel: &SpectrumPanel<'_>,
) -> Result<(), String> {
    // A pixel is masked when its wavelength is not finite or its error marks it missing.
    let masked = |k: usize| {
        !wavelength[k].is_finite()
            || panel
                .flux_err
                .is_some_and(|e| !(e[k].is_finite() && e[k] > 0.0))
    };
    let observed: Vec<(f64, f64)> = (0..wavelength.len())
        .map(|k| {
            (
                wavelength[k],
                if masked(k) { f64::NAN } else { panel.flux[k] },
            )
        })
        .collect();
    let model: Vec<(f64, f64)> = (0..wavelength.len())
        .map(|k| (wavelength[k], panel.model[k]))
        .collect();
    let residual: Vec<(f64, f64)> = (0..wavelength.len())
        .map(|k| {
            let r = observed[k].1 - panel.model[k];
            let r = match panel.flux_err {
                Some(e) => r / e[k],
                None => r,
            };
            (wavelength[k], r)
        })
        .collect();

    let title_px = CAPTION_PX as i32 + 10;
    let area = area.margin(6, 6, 8, 16);
    let (title_area, body) = area.split_vertically(title_px);
    title_area
        .titled(panel.id, font(CAPTION_PX))
        .map_err(draw_err)?;
    let body_height = body.dim_in_pixel().1 as i32;
    let (upper, lower) = body.split_vertically(body_height * 68 / 100);

    // The flux panel has no x tick labels, because the residual strip below has them.
    let flux_values = observed.iter().chain(&model).map(|(_, f)| *f);
    let y_range = padded_range(flux_values, 0.05).unwrap_or(0.0..1.0);
    let y_label_px = 80;
    let mut chart = ChartBuilder::on(&upper)
        .x_label_area_size(4)
        .y_label_area_size(y_label_px)
        .build_cartesian_2d(x_range.clone(), y_range)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .y_desc(flux_title)
        .x_label_formatter(&|_| String::new())
        .y_label_formatter(&|y| format_tick(*y))
        .y_labels(5)
        .label_style(font(TICK_PX))
        .axis_desc_style(font(AXIS_TITLE_PX))
        .light_line_style(WHITE)
        .draw()
        .map_err(draw_err)?;

    let model_colour = PALETTE[1];
    let curves = [
        ("observed", &observed, OBSERVED),
        ("model", &model, model_colour),
    ];
    for (name, points, colour) in curves {
        for (j, run) in finite_runs(points.iter().copied()).into_iter().enumerate() {
            let drawn = chart
                .draw_series(run_series(run, colour.stroke_width(1)))
                .map_err(draw_err)?;
            if j == 0 {
                drawn
                    .label(name)
                    .legend(move |(x, y)| legend_line(x, y, colour));
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(font(TICK_PX))
        .background_style(WHITE.mix(0.85))
        .border_style(GREY)
        .draw()
        .map_err(draw_err)?;

    // The residual strip, symmetric about zero.
    let largest = residual
        .iter()
        .map(|(_, r)| r.abs())
        .filter(|r| r.is_finite())
        .fold(0.0, f64::max);
    let half = if largest > 0.0 { largest * 1.1 } else { 1.0 };
    let residual_title = if panel.flux_err.is_some() {
        "(obs − model)/σ"
    } else {
        "obs − model"
    };
    let mut strip = ChartBuilder::on(&lower)
        .x_label_area_size(50)
        .y_label_area_size(y_label_px)
        .build_cartesian_2d(x_range.clone(), -half..half)
        .map_err(draw_err)?;
    strip
        .configure_mesh()
        .x_desc(wavelength_title)
        .y_desc(residual_title)
        .x_label_formatter(&|x| format_tick(*x))
        .y_label_formatter(&|y| format_tick(*y))
        .y_labels(3)
        .label_style(font(TICK_PX))
        .axis_desc_style(font(AXIS_TITLE_PX))
        .light_line_style(WHITE)
        .draw()
        .map_err(draw_err)?;
    strip
        .draw_series(LineSeries::new(
            [(x_range.start, 0.0), (x_range.end, 0.0)],
            GREY.stroke_width(1),
        ))
        .map_err(draw_err)?;
    for run in finite_runs(residual.iter().copied()) {
        strip
            .draw_series(run_series(run, OBSERVED.stroke_width(1)))
            .map_err(draw_err)?;
    }
    Ok(())
}

/// Draws `figure` on `size` pixels into `path`, PNG or SVG by its extension,
/// through a temporary file in the same directory.
fn render(path: &Path, size: (u32, u32), figure: &Figure<'_, '_>) -> Result<(), PlotError> {
    register_font()?;

    let format = Format::of(path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(PlotError::MissingDirectory {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
        });
    }
    let temp = temporary_path(dir, path, format);
    let draw_failed = |message| PlotError::Draw {
        path: path.to_path_buf(),
        message,
    };

    let written = match format {
        Format::Png => (|| {
            let root = BitMapBackend::new(&temp, size).into_drawing_area();
            root.fill(&WHITE).map_err(draw_err).map_err(draw_failed)?;
            draw_figure(&root, figure).map_err(draw_failed)?;
            root.present().map_err(draw_err).map_err(draw_failed)
        })(),
        Format::Svg => (|| {
            let mut text = String::new();
            {
                let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
                root.fill(&WHITE).map_err(draw_err).map_err(draw_failed)?;
                draw_figure(&root, figure).map_err(draw_failed)?;
                root.present().map_err(draw_err).map_err(draw_failed)?;
            }
            write_synced(&temp, text.as_bytes()).map_err(|source| PlotError::Io {
                path: path.to_path_buf(),
                source,
            })
        })(),
    };

    let renamed = written.and_then(|()| {
        fs::rename(&temp, path).map_err(|source| PlotError::Io {
            path: path.to_path_buf(),
            source,
        })
    });
    if renamed.is_err() {
        let _ = fs::remove_file(&temp);
    }
    renamed
}

#[derive(Debug, Clone, Copy)]
enum Format {
    Png,
    Svg,
}

impl Format {
    fn of(path: &Path) -> Result<Self, PlotError> {
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("png") => Ok(Format::Png),
            Some("svg") => Ok(Format::Svg),
            _ => Err(PlotError::UnsupportedFormat {
                path: path.to_path_buf(),
            }),
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Format::Png => "png",
            Format::Svg => "svg",
        }
    }
}

/// Builds a hidden file name next to `path`, unique within this process. It ends in the
/// format's extension, because the PNG encoder picks its format from the extension.
fn temporary_path(dir: &Path, path: &Path, format: Format) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let stem = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(
        ".{stem}.{}-{unique}.partial.{}",
        std::process::id(),
        format.extension()
    ))
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn register_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok { Ok(()) } else { Err(PlotError::Font) }
}

fn font(px: u32) -> TextStyle<'static> {
    (FAMILY, px).into_font().color(&BLACK)
}

fn draw_err<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> String {
    e.to_string()
}

fn check_len(path: &Path, what: &str, values: &[f64], expected: usize) -> Result<(), PlotError> {
    if values.len() == expected {
        return Ok(());
    }
    Err(PlotError::LengthMismatch {
        path: path.to_path_buf(),
        what: what.to_string(),
        got: values.len(),
        expected,
    })
}

/// Returns the range of the finite values, widened by `pad` times its width on each side.
/// A single value gets ±1 % of itself (±1 at zero), and no finite value gives `None`.
fn padded_range(values: impl Iterator<Item = f64>, pad: f64) -> Option<std::ops::Range<f64>> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold(None, |acc: Option<(f64, f64)>, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })?;
    if hi > lo {
        let margin = pad * (hi - lo);
        return Some(lo - margin..hi + margin);
    }
    let half = if lo == 0.0 { 1.0 } else { 0.01 * lo.abs() };
    Some(lo - half..hi + half)
}

/// Splits points into runs of consecutive finite points, so that a missing value leaves
/// a gap instead of a line through it.
fn finite_runs(points: impl Iterator<Item = (f64, f64)>) -> Vec<Vec<(f64, f64)>> {
    let mut runs = vec![];
    let mut current = vec![];
    for (x, y) in points {
        if x.is_finite() && y.is_finite() {
            current.push((x, y));
        } else if !current.is_empty() {
            runs.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        runs.push(current);
    }
    runs
}

/// Builds a line through a run of finite points, or a dot when the run is a single point
/// (a pixel between two missing ones).
fn run_series<DB: DrawingBackend>(
    run: Vec<(f64, f64)>,
    style: ShapeStyle,
) -> Vec<DynElement<'static, DB, (f64, f64)>> {
    if let [point] = run[..] {
        let radius = style.stroke_width;
        return vec![Circle::new(point, radius, style.filled()).into_dyn()];
    }
    vec![PathElement::new(run, style).into_dyn()]
}

/// Builds the legend sample of a line, drawn wider than the line so that it is easy to see.
fn legend_line<DB: DrawingBackend>(
    x: i32,
    y: i32,
    colour: RGBColor,
) -> DynElement<'static, DB, (i32, i32)> {
    PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(3)).into_dyn()
}

/// Formats a tick label with at most four decimals and no trailing zeros. Outside
/// [1e-4, 1e6) it uses scientific notation with two significant digits.
fn format_tick(x: f64) -> String {
    if x != 0.0 && (x.abs() >= 1e6 || x.abs() < 1e-4) {
        return format!("{x:.1e}").replace(".0e", "e");
    }
    let text = format!("{x:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_string()
    } else {
        text.to_string()
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        0.5 * (values[n / 2 - 1] + values[n / 2])
    }
}
