//! Figures: files written in both formats, the statistics they print, gaps at missing
//! pixels, and errors that leave nothing behind.

use std::fs;
use std::path::{Path, PathBuf};

use lux::plot::{
    LabelPanel, PlotError, SpectrumPanel, format_sig, label_stats, loss_history, loss_history_each, one_to_one,
    spectra, stats_lines,
};

/// Creates an empty directory for one test under the target directory, where the files
/// stay for viewing.
fn out_dir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("plots")
        .join(test);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Decodes a PNG and returns it as RGB.
fn decode_png(path: &Path) -> image::RgbImage {
    let bytes = fs::read(path).unwrap();
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
    image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
        .unwrap()
        .to_rgb8()
}

/// Counts the pixels where blue exceeds red by more than 60 (points and error bars).
fn count_blue(image: &image::RgbImage) -> usize {
    image
        .pixels()
        .filter(|p| i32::from(p.0[2]) - i32::from(p.0[0]) > 60)
        .count()
}

/// Counts the pixels of exactly this colour.
fn count_colour(image: &image::RgbImage, rgb: [u8; 3]) -> usize {
    image.pixels().filter(|p| p.0 == rgb).count()
}

/// Counts the dark pixels (text, axes, black lines) in a rectangle.
fn count_dark(image: &image::RgbImage, x: std::ops::Range<u32>, y: std::ops::Range<u32>) -> usize {
    y.flat_map(|j| x.clone().map(move |i| (i, j)))
        .filter(|&(i, j)| image.get_pixel(i, j).0.iter().all(|&c| c < 100))
        .count()
}

/// Lists the file names in a directory, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Residuals predicted − catalogue of 1, 2, 3, 4, 10 and one NaN pair.
const CATALOGUE: [f64; 6] = [5000.0, 5100.0, 5200.0, 5300.0, 5400.0, f64::NAN];
const PREDICTED: [f64; 6] = [5001.0, 5102.0, 5203.0, 5304.0, 5410.0, 5500.0];

#[test]
fn stats_known_residuals() {
    let stats = label_stats(&CATALOGUE, &PREDICTED);

    // median 3, absolute deviations 2, 1, 0, 1, 7 with median 1.
    assert_eq!((stats.n, stats.skipped), (5, 1));
    assert!((stats.bias - 4.0).abs() < 1e-9);
    assert!((stats.rmse - 26f64.sqrt()).abs() < 1e-9);
    assert!((stats.robust_scatter - 1.4826).abs() < 1e-9);

    // Even count: median 2.5, deviations 1.5, 0.5, 0.5, 7.5 with median 1.
    let even = label_stats(&[0.0; 4], &[1.0, 2.0, 3.0, 10.0]);
    assert!((even.robust_scatter - 1.4826).abs() < 1e-12);
    assert!((even.bias - 4.0).abs() < 1e-12);

    let none = label_stats(&[f64::NAN], &[1.0]);
    assert_eq!((none.n, none.skipped), (0, 1));
    assert!(none.bias.is_nan());
    assert!(none.rmse.is_nan());
}

#[test]
fn stats_text() {
    assert_eq!(format_sig(4.0), "4.00");
    assert_eq!(format_sig(26f64.sqrt()), "5.10");
    assert_eq!(format_sig(-48.37), "-48.4");
    assert_eq!(format_sig(0.05234), "0.0523");
    assert_eq!(format_sig(1234.4), "1234");
    assert_eq!(format_sig(9.09e-5), "9.09e-5");
    assert_eq!(format_sig(0.0), "0");

    let lines = stats_lines(&label_stats(&CATALOGUE, &PREDICTED));
    assert_eq!(
        lines,
        [
            "bias = 4.00",
            "RMSE = 5.10",
            "robust σ = 1.48",
            "N = 5 (1 NaN skipped)"
        ]
    );
}

#[test]
fn one_to_one_files() {
    let dir = out_dir("one_to_one");
    let err = [20.0, 30.0, 25.0, f64::NAN, 40.0, 10.0];
    let feh_catalogue: Vec<f64> = (0..40).map(|i| -1.5 + 0.05 * i as f64).collect();
    let feh_predicted: Vec<f64> = feh_catalogue
        .iter()
        .enumerate()
        .map(|(i, c)| c + 0.1 * ((i as f64 * 1.7).sin()))
        .collect();
    let labels = [
        LabelPanel {
            name: "Teff (K)",
            catalogue: &CATALOGUE,
            predicted: &PREDICTED,
            predicted_err: Some(&err),
        },
        LabelPanel {
            name: "[Fe/H]",
            catalogue: &feh_catalogue,
            predicted: &feh_predicted,
            predicted_err: None,
        },
    ];

    for name in ["labels.png", "labels.svg"] {
        one_to_one(dir.join(name), &labels).unwrap();
    }
    assert_eq!(listing(&dir), ["labels.png", "labels.svg"]);

    let png = decode_png(&dir.join("labels.png"));
    assert_eq!(png.dimensions(), (960, 480));
    // Points and error bars in blue, and text in both panels' captions.
    assert!(count_blue(&png) > 200);
    assert!(count_dark(&png, 100..380, 0..40) > 50);
    assert!(count_dark(&png, 580..860, 0..40) > 50);

    let svg = fs::read_to_string(dir.join("labels.svg")).unwrap();
    for text in [
        "catalogue Teff (K)",
        "predicted Teff (K)",
        "catalogue [Fe/H]",
        "bias = 4.00",
        "RMSE = 5.10",
        "robust σ = 1.48",
        "N = 5 (1 NaN skipped)",
        "N = 40",
    ] {
        assert!(has_text(&svg, text), "SVG lacks {text:?}");
    }
}

#[test]
fn one_to_one_grid() {
    let dir = out_dir("one_to_one_grid");
    let n = 5000;
    // A deterministic scatter about the truth: the fractional part of k × golden ratio.
    let noise = |k: usize, scale: f64| scale * ((k as f64 * 0.618_034).fract() - 0.5);
    let teff: Vec<f64> = (0..n)
        .map(|k| 4000.0 + 2500.0 * noise(7 * k, 1.0))
        .collect();
    let logg: Vec<f64> = (0..n).map(|k| 2.5 + 2.0 * noise(11 * k, 1.0)).collect();
    let feh: Vec<f64> = (0..n).map(|k| -0.5 + 1.5 * noise(13 * k, 1.0)).collect();
    let alpha: Vec<f64> = (0..n).map(|k| 0.1 + 0.3 * noise(17 * k, 1.0)).collect();
    let predict = |truth: &[f64], scale: f64| -> Vec<f64> {
        (0..n)
            .map(|k| truth[k] + noise(31 * k + 3, scale))
            .collect()
    };
    let (teff_p, logg_p, feh_p, alpha_p) = (
        predict(&teff, 200.0),
        predict(&logg, 0.3),
        predict(&feh, 0.15),
        predict(&alpha, 0.05),
    );
    let teff_err = vec![60.0; n];
    let panel = |name, catalogue, predicted, predicted_err| LabelPanel {
        name,
        catalogue,
        predicted,
        predicted_err,
    };
    let labels = [
        panel("Teff (K)", &teff[..], &teff_p[..], Some(&teff_err[..])),
        panel("log g (dex)", &logg[..], &logg_p[..], None),
        panel("[Fe/H]", &feh[..], &feh_p[..], None),
        panel("[α/Fe]", &alpha[..], &alpha_p[..], None),
    ];

    one_to_one(dir.join("grid.png"), &labels).unwrap();
    one_to_one(dir.join("grid.svg"), &labels).unwrap();

    // Three panels of 480 px to a row: two rows. Each panel's statistics lie in the
    // upper left quarter of its own cell.
    assert_eq!(decode_png(&dir.join("grid.png")).dimensions(), (1440, 960));
    let svg = fs::read_to_string(dir.join("grid.svg")).unwrap();
    for (k, label) in labels.iter().enumerate() {
        let stats = label_stats(label.catalogue, label.predicted);
        let (left, top) = (480 * (k as i32 % 3), 480 * (k as i32 / 3));
        for line in &stats_lines(&stats)[..3] {
            let (x, y) = text_position(&svg, line).expect(line);
            assert!((left..left + 240).contains(&x), "{line:?} at x = {x}");
            assert!((top..top + 240).contains(&y), "{line:?} at y = {y}");
        }
    }
}

/// Finds the anchor of the SVG text element whose whole content is `text`.
fn text_position(svg: &str, text: &str) -> Option<(i32, i32)> {
    let lines: Vec<&str> = svg.lines().collect();
    let k = lines.iter().position(|l| l.trim() == text)?;
    let attribute = |name: &str| -> Option<i32> {
        let start = lines[k - 1].find(&format!(" {name}=\""))? + name.len() + 3;
        let end = start + lines[k - 1][start..].find('"')?;
        lines[k - 1][start..end].parse().ok()
    };
    Some((attribute("x")?, attribute("y")?))
}

#[test]
fn loss_files() {
    let dir = out_dir("loss");
    let wls = [-100.0, -150.0, -180.0, -190.0, -190.5, -190.9];
    let adam = [-50.0, -120.0, f64::NAN, -170.0, -185.0, -189.0, -190.0];
    let series = [("BlockWls", &wls[..]), ("Adam", &adam[..])];

    for name in ["loss.png", "loss.svg"] {
        loss_history(dir.join(name), &series).unwrap();
    }

    let png = decode_png(&dir.join("loss.png"));
    assert_eq!(png.dimensions(), (900, 600));
    // Both series drawn, each in its own colour.
    assert!(count_colour(&png, [31, 119, 180]) > 100);
    assert!(count_colour(&png, [214, 39, 40]) > 100);

    // min = -190.9 and max = -50, so ε = 1e-6 × 140.9.
    let svg = fs::read_to_string(dir.join("loss.svg")).unwrap();
    for text in [
        "iteration",
        "loss − min(loss) + 1.41e-4",
        "BlockWls",
        "Adam",
    ] {
        assert!(has_text(&svg, text), "SVG lacks {text:?}");
    }
    // The NaN splits Adam's curve in two, and BlockWls is one line.
    assert_eq!(polylines(&svg, "#D62728", "2"), 2);
    assert_eq!(polylines(&svg, "#1F77B4", "2"), 1);
}

/// Checks whether an SVG has a text element whose whole content is `text`.
fn has_text(svg: &str, text: &str) -> bool {
    svg.lines().any(|l| l.trim() == text)
}

/// Counts the polylines of one stroke colour and width in an SVG.
fn polylines(svg: &str, colour: &str, width: &str) -> usize {
    svg.lines()
        .filter(|l| l.contains("<polyline"))
        .filter(|l| l.contains(&format!("stroke=\"{colour}\"")))
        .filter(|l| l.contains(&format!("stroke-width=\"{width}\"")))
        .count()
}

#[test]
fn spectra_files() {
    let dir = out_dir("spectra");
    let wavelength: Vec<f64> = (0..200).map(|k| 15100.0 + 2.0 * k as f64).collect();
    let line = |k: usize, depth: f64| {
        let x = (k as f64 - 100.0) / 6.0;
        1.0 - depth * (-0.5 * x * x).exp()
    };
    let model_a: Vec<f64> = (0..200).map(|k| line(k, 0.4)).collect();
    let mut flux_a: Vec<f64> = (0..200)
        .map(|k| model_a[k] + 0.01 * ((k as f64 * 2.3).sin()))
        .collect();
    flux_a[50] = f64::NAN;
    let mut model_b: Vec<f64> = (0..200).map(|k| line(k, 0.2)).collect();
    model_b[150] = f64::NAN;
    let flux_b: Vec<f64> = (0..200)
        .map(|k| line(k, 0.2) + 0.01 * ((k as f64 * 0.7).cos()))
        .collect();
    let mut err_b = vec![0.01; 200];
    err_b[20] = f64::INFINITY;
    err_b[21] = 0.0;

    let panels = [
        SpectrumPanel {
            id: "2M00000002+7417074",
            flux: &flux_a,
            model: &model_a,
            flux_err: None,
        },
        SpectrumPanel {
            id: "2M00000068+5710233",
            flux: &flux_b,
            model: &model_b,
            flux_err: Some(&err_b),
        },
    ];

    for name in ["spectra.png", "spectra.svg"] {
        spectra(
            dir.join(name),
            &wavelength,
            "wavelength (Å)",
            "normalized flux",
            &panels,
        )
        .unwrap();
    }

    let png = decode_png(&dir.join("spectra.png"));
    assert_eq!(png.dimensions(), (1200, 800));
    assert!(count_colour(&png, [214, 39, 40]) > 100);

    let svg = fs::read_to_string(dir.join("spectra.svg")).unwrap();
    for text in [
        "2M00000002+7417074",
        "2M00000068+5710233",
        "wavelength (Å)",
        "normalized flux",
        "obs − model",
        "(obs − model)/σ",
    ] {
        assert!(has_text(&svg, text), "SVG lacks {text:?}");
    }

    // Model lines: one run for star a, two for star b (NaN at pixel 150).
    assert_eq!(polylines(&svg, "#D62728", "1"), 3);
    // Observed and residual lines. Star a has a NaN flux at pixel 50 (2 + 2 runs). Star b
    // is masked at pixels 20 and 21 (2 observed runs), and its residual also stops at the
    // model's NaN at pixel 150 (3 runs).
    assert_eq!(polylines(&svg, "#191919", "1"), 9);
}

#[test]
fn missing_directory_error() {
    let dir = out_dir("missing_directory");
    let path = dir.join("no_such_dir").join("loss.png");
    let losses = [3.0, 2.0, 1.0];

    let error = loss_history(&path, &[("fit", &losses[..])]).unwrap_err();
    assert!(
        matches!(error, PlotError::MissingDirectory { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
    assert!(listing(&dir).is_empty());
}

#[test]
fn failed_write_leaves_nothing() {
    let dir = out_dir("failed_write");
    let losses = [3.0, 2.0, 1.0];

    // A directory in the way of the output: the figure is drawn, the rename fails, and
    // the temporary file is removed.
    for name in ["taken.png", "taken.svg"] {
        fs::create_dir(dir.join(name)).unwrap();
        let error = loss_history(dir.join(name), &[("fit", &losses[..])]).unwrap_err();
        assert!(matches!(error, PlotError::Io { .. }), "{error:?}");
        assert!(error.to_string().contains(name), "{error}");
    }
    assert_eq!(listing(&dir), ["taken.png", "taken.svg"]);

    // Inputs rejected before drawing leave an existing figure as it was.
    let old = dir.join("old.svg");
    fs::write(&old, "old figure").unwrap();
    let panel = LabelPanel {
        name: "log g",
        catalogue: &[1.0, 2.0],
        predicted: &[1.0],
        predicted_err: None,
    };
    let error = one_to_one(&old, &[panel]).unwrap_err();
    assert!(
        matches!(
            error,
            PlotError::LengthMismatch {
                got: 1,
                expected: 2,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(fs::read_to_string(&old).unwrap(), "old figure");

    let error = loss_history(dir.join("loss.pdf"), &[("fit", &losses[..])]).unwrap_err();
    assert!(
        matches!(error, PlotError::UnsupportedFormat { .. }),
        "{error:?}"
    );
    assert_eq!(listing(&dir), ["old.svg", "taken.png", "taken.svg"]);
}

#[test]
fn loss_each_fit_from_its_minimum() {
    let dir = out_dir("loss-each");
    // Two folds a million apart in loss: each still spans its own decades.
    let fold = [-1.0e6, -1.0e6 - 900.0, -1.0e6 - 990.0, -1.0e6 - 999.0];
    let other = [-2.0e6, -2.0e6 - 90.0, -2.0e6 - 99.0];
    let series = [("fold 1", &fold[..]), ("final model", &other[..])];
    loss_history_each(dir.join("loss.svg"), &series).unwrap();
    loss_history_each(dir.join("loss.png"), &series).unwrap();

    // The largest drop of a series is 999, so ε = 1e-6 × 999.
    let svg = fs::read_to_string(dir.join("loss.svg")).unwrap();
    for text in ["loss − minimum of its fit + 9.99e-4", "fold 1", "final model"] {
        assert!(has_text(&svg, text), "SVG lacks {text:?}");
    }
    let png = decode_png(&dir.join("loss.png"));
    assert!(count_colour(&png, [31, 119, 180]) > 100);
    assert!(count_colour(&png, [214, 39, 40]) > 100);
}
