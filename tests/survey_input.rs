//! Survey input: FITS spectra and tables written here card by card, the committed MILES
//! extract, normalization, resampling, binning, label tables and assumed errors.

use std::path::{Path, PathBuf};

use lux::dsl::ndarray::{Array1, Array2, array};
use lux::survey::{
    self, ColumnData, ContinuumFit, LabelErrors, Normalization, SpectraSet, Spectrum, SurveyError,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The committed MILES extract.
fn miles_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/miles")
}

/// A fresh scratch directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lux-survey-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One 80-character header card; `value` is written as given (quote strings yourself).
fn card(key: &str, value: &str) -> String {
    format!("{key:<8}= {value:>20}")
        .chars()
        .chain(std::iter::repeat(' '))
        .take(80)
        .collect()
}

/// Header cards then END, padded with blanks to whole 2880-byte blocks.
fn header(cards: &[String]) -> Vec<u8> {
    let mut text: String = cards.concat();
    text.push_str(&format!("{:<80}", "END"));
    let mut bytes = text.into_bytes();
    bytes.resize(bytes.len().div_ceil(2880) * 2880, b' ');
    bytes
}

/// Data bytes padded with zeros to whole blocks.
fn padded(mut data: Vec<u8>) -> Vec<u8> {
    data.resize(data.len().div_ceil(2880) * 2880, 0);
    data
}

/// A 1-D primary image: the mandatory cards, then `extra`, then the data.
fn image_file(bitpix: i32, n: usize, extra: &[String], data: Vec<u8>) -> Vec<u8> {
    let mut cards = vec![
        card("SIMPLE", "T"),
        card("BITPIX", &bitpix.to_string()),
        card("NAXIS", "1"),
        card("NAXIS1", &n.to_string()),
    ];
    cards.extend_from_slice(extra);
    let mut bytes = header(&cards);
    bytes.extend(padded(data));
    bytes
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn linear_wcs(start: f64, step: f64, reference: f64) -> Vec<String> {
    vec![
        card("CRVAL1", &format!("{start:.6}")),
        card("CDELT1", &format!("{step:.6}")),
        card("CRPIX1", &format!("{reference:.1}")),
    ]
}

fn big_endian_f64(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

#[test]
fn fits_wcs_exact() -> TestResult {
    let dir = scratch("wcs");
    let flux = [1.5, -2.25, 0.0, 1e-300, 7.0];
    let mut extra = linear_wcs(4000.0, 2.5, 3.0);
    extra.push(card("CTYPE1", "'WAVE    '"));
    let path = write(
        &dir,
        "star_a.fits",
        &image_file(-64, 5, &extra, big_endian_f64(&flux)),
    );

    let spectrum = survey::read_spectrum(&path)?;

    // Pixel i (0-based) is at CRVAL1 + CDELT1 (i + 1 - CRPIX1).
    assert_eq!(spectrum.id, "star_a");
    assert_eq!(
        spectrum.wavelength,
        array![3995.0, 3997.5, 4000.0, 4002.5, 4005.0]
    );
    assert_eq!(spectrum.flux, Array1::from(flux.to_vec()));
    Ok(())
}

#[test]
fn fits_bscale_bzero() -> TestResult {
    let dir = scratch("bscale");
    let stored: [i16; 4] = [-32768, 0, 10, -4];
    let extra = vec![
        card("BSCALE", "0.5"),
        card("BZERO", "100.0"),
        card("BLANK", "-32768"),
        card("CRVAL1", "500.0"),
        card("CD1_1", "0.25"),
        card("CUNIT1", "'nm      '"),
    ];
    let data = stored.iter().flat_map(|v| v.to_be_bytes()).collect();
    let path = write(&dir, "scaled.fits", &image_file(16, 4, &extra, data));

    let spectrum = survey::read_spectrum(&path)?;

    // 100 + 0.5 * stored; BLANK is missing. CD1_1 in nm, no CRPIX1 (so 1), read in Å.
    assert!(spectrum.flux[0].is_nan());
    assert_eq!(
        spectrum.flux.slice(lux::dsl::ndarray::s![1..]),
        array![100.0, 105.0, 98.0]
    );
    assert_eq!(spectrum.wavelength, array![5000.0, 5002.5, 5005.0, 5007.5]);
    Ok(())
}

#[test]
fn fits_integer_and_float32() -> TestResult {
    let dir = scratch("bitpix");
    let wcs = linear_wcs(1.0, 1.0, 1.0);

    let stored32: [i32; 3] = [-7, 0, 2_000_000_000];
    let data = stored32.iter().flat_map(|v| v.to_be_bytes()).collect();
    let path = write(&dir, "i32.fits", &image_file(32, 3, &wcs, data));
    assert_eq!(survey::read_spectrum(&path)?.flux, array![-7.0, 0.0, 2e9]);

    let stored_f32: [f32; 3] = [0.25, -1.5, 3.0e5];
    let data = stored_f32.iter().flat_map(|v| v.to_be_bytes()).collect();
    let path = write(&dir, "f32.fits", &image_file(-32, 3, &wcs, data));
    assert_eq!(
        survey::read_spectrum(&path)?.flux,
        array![0.25, -1.5, 3.0e5]
    );
    Ok(())
}

#[test]
fn fits_truncated_names_file() {
    let dir = scratch("truncated");
    let full = image_file(
        -64,
        1000,
        &linear_wcs(1.0, 1.0, 1.0),
        big_endian_f64(&[1.0; 1000]),
    );

    let path = write(&dir, "cut_data.fits", &full[..2880 + 4000]);
    let error = survey::read_spectrum(&path).unwrap_err();
    assert!(matches!(error, SurveyError::Truncated { .. }), "{error:?}");
    assert!(error.to_string().contains("cut_data.fits"), "{error}");

    let path = write(&dir, "cut_header.fits", &full[..1200]);
    let error = survey::read_spectrum(&path).unwrap_err();
    assert!(matches!(error, SurveyError::Truncated { .. }), "{error:?}");
    assert!(error.to_string().contains("cut_header.fits"), "{error}");
}

#[test]
fn fits_not_fits_names_file() {
    let dir = scratch("not_fits");
    let path = write(&dir, "labels.csv", b"id,teff\na,5000\n");
    let error = survey::read_spectrum(&path).unwrap_err();
    assert!(matches!(error, SurveyError::NotFits { .. }), "{error:?}");
    assert!(error.to_string().contains("labels.csv"), "{error}");
}

#[test]
fn fits_image_2d_rejected() {
    let dir = scratch("image_2d");
    let mut cards = vec![
        card("SIMPLE", "T"),
        card("BITPIX", "-64"),
        card("NAXIS", "2"),
        card("NAXIS1", "3"),
        card("NAXIS2", "2"),
    ];
    cards.extend(linear_wcs(1.0, 1.0, 1.0));
    let mut bytes = header(&cards);
    bytes.extend(padded(big_endian_f64(&[0.0; 6])));
    let path = write(&dir, "image.fits", &bytes);

    let error = survey::read_spectrum(&path).unwrap_err();
    assert!(
        matches!(&error, SurveyError::NotOneDimensional { shape, .. } if shape == &[3, 2]),
        "{error:?}"
    );
    assert!(error.to_string().contains("image.fits"), "{error}");
}

#[test]
fn fits_missing_wcs() {
    let dir = scratch("no_wcs");
    let path = write(
        &dir,
        "bare.fits",
        &image_file(
            -64,
            2,
            &[card("CRVAL1", "1.0")],
            big_endian_f64(&[1.0, 2.0]),
        ),
    );
    let error = survey::read_spectrum(&path).unwrap_err();
    assert!(
        matches!(
            error,
            SurveyError::NoWcs {
                missing: "CDELT1 (or CD1_1)",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("bare.fits"), "{error}");

    let mut extra = linear_wcs(3.5, 0.0001, 1.0);
    extra.push(card("CTYPE1", "'WAVE-LOG'"));
    let path = write(
        &dir,
        "log.fits",
        &image_file(-64, 2, &extra, big_endian_f64(&[1.0, 2.0])),
    );
    let error = survey::read_spectrum(&path).unwrap_err();
    assert!(
        matches!(error, SurveyError::UnsupportedWcs { .. }),
        "{error:?}"
    );
}

/// A primary HDU without data, then a binary table of stars: `ID` (8A), `TEFF` (D),
/// `FLUX` (3E), `WAVE` (3D), `N` (J with TSCAL 2, TZERO 10, TNULL -1).
fn table_file() -> Vec<u8> {
    let mut bytes = header(&[
        card("SIMPLE", "T"),
        card("BITPIX", "8"),
        card("NAXIS", "0"),
        card("EXTEND", "T"),
    ]);
    let row_bytes = 8 + 8 + 12 + 24 + 4;
    bytes.extend(header(&[
        card("XTENSION", "'BINTABLE'"),
        card("BITPIX", "8"),
        card("NAXIS", "2"),
        card("NAXIS1", &row_bytes.to_string()),
        card("NAXIS2", "2"),
        card("PCOUNT", "0"),
        card("GCOUNT", "1"),
        card("TFIELDS", "5"),
        card("TTYPE1", "'ID      '"),
        card("TFORM1", "'8A      '"),
        card("TTYPE2", "'TEFF    '"),
        card("TFORM2", "'D       '"),
        card("TTYPE3", "'FLUX    '"),
        card("TFORM3", "'3E      '"),
        card("TTYPE4", "'WAVE    '"),
        card("TFORM4", "'3D      '"),
        card("TTYPE5", "'N       '"),
        card("TFORM5", "'J       '"),
        card("TSCAL5", "2.0"),
        card("TZERO5", "10.0"),
        card("TNULL5", "-1"),
    ]));
    // ID, TEFF, FLUX, WAVE, N.
    type Row = (&'static [u8; 8], f64, [f32; 3], [f64; 3], i32);
    let rows: [Row; 2] = [
        (
            b"m0001V  ",
            5305.0,
            [1.0, 0.5, 0.25],
            [5000.0, 5001.0, 5002.0],
            3,
        ),
        (
            b"m0002V  ",
            f64::NAN,
            [2.0, 4.0, 8.0],
            [5000.0, 5001.0, 5002.0],
            -1,
        ),
    ];
    let mut data = Vec::new();
    for (id, teff, flux, wave, n) in rows {
        data.extend_from_slice(id);
        data.extend(teff.to_be_bytes());
        data.extend(flux.iter().flat_map(|v| v.to_be_bytes()));
        data.extend(wave.iter().flat_map(|v| v.to_be_bytes()));
        data.extend(n.to_be_bytes());
    }
    bytes.extend(padded(data));
    bytes
}

#[test]
fn fits_table_columns() -> TestResult {
    let dir = scratch("table");
    let path = write(&dir, "stars.fits", &table_file());

    let table = survey::read_table(&path)?;
    assert_eq!(table.n_rows, 2);
    assert_eq!(table.names(), ["ID", "TEFF", "FLUX", "WAVE", "N"]);
    assert_eq!(table.text("id")?, ["m0001V", "m0002V"]);
    assert_eq!(
        table.numeric("FLUX")?,
        &array![[1.0, 0.5, 0.25], [2.0, 4.0, 8.0]]
    );
    match &table.column("N")?.data {
        ColumnData::Numeric(n) => {
            assert_eq!(n[[0, 0]], 16.0);
            assert!(n[[1, 0]].is_nan());
        }
        other => panic!("N read as {other:?}"),
    }

    let labels = survey::read_label_fits(&path, None)?;
    assert_eq!(labels.ids, ["m0001V", "m0002V"]);
    assert_eq!(labels.names, ["TEFF", "N"]);
    assert_eq!(labels.values[[0, 0]], 5305.0);

    let spectra = survey::spectra_from_table(&table, "FLUX", "WAVE", Some("ID"))?;
    assert_eq!(spectra.wavelength, array![5000.0, 5001.0, 5002.0]);
    assert_eq!(spectra.flux.row(1), array![2.0, 4.0, 8.0]);

    let error = table.numeric("LOGG").unwrap_err().to_string();
    assert!(
        error.contains("stars.fits") && error.contains("LOGG") && error.contains("TEFF"),
        "{error}"
    );

    let error = survey::read_table(&write(&dir, "cut.fits", &table_file()[..2880 + 2880 + 50]))
        .unwrap_err();
    assert!(matches!(error, SurveyError::Truncated { .. }), "{error:?}");
    Ok(())
}

/// Number of spectra and pixels of the committed extract.
const MILES_STARS: usize = 306;
const MILES_PIXELS: usize = 720;

fn miles_spectra() -> Result<SpectraSet, SurveyError> {
    survey::read_spectra_dir(&miles_dir(), "MILES_res2.50_star_m*V.fits")
}

#[test]
fn miles_extract_grid() -> TestResult {
    let spectra = miles_spectra()?;

    assert_eq!(spectra.flux.dim(), (MILES_STARS, MILES_PIXELS));
    assert!(spectra.resampled.is_empty());

    // The originals start at 3540.5 Å in 0.9 Å steps; the extract keeps pixels 1400..2120.
    for (i, &w) in spectra.wavelength.iter().enumerate() {
        let expected = 3540.5 + 0.9 * (1400 + i) as f64;
        assert!((w - expected).abs() < 1e-9, "pixel {i}: {w} vs {expected}");
    }
    assert!((spectra.wavelength[MILES_PIXELS - 1] - 5447.6).abs() < 1e-9);

    // Values read from the full-length original file with Python's struct module.
    let row = spectra
        .ids
        .iter()
        .position(|id| id == "MILES_res2.50_star_m0081V")
        .unwrap();
    assert_eq!(spectra.flux[[row, 0]], 1.149119);
    assert_eq!(spectra.flux[[row, 1]], 1.154813);
    assert_eq!(spectra.flux[[row, MILES_PIXELS - 1]], 1.001174);
    Ok(())
}

#[test]
fn miles_labels_join() -> TestResult {
    let spectra = miles_spectra()?;
    let params = survey::read_miles_params(&miles_dir().join("MILES_params.db"))?;
    assert_eq!(params.n_rows(), MILES_STARS);
    assert_eq!(params.names, ["teff", "logg", "feh"]);

    let labels = survey::join(&spectra, &params)?;
    assert_eq!(labels.ids, spectra.ids);
    assert_eq!(labels.complete_rows().len(), 300);

    let row = |star: &str| labels.ids.iter().position(|id| id.ends_with(star)).unwrap();
    assert_eq!(
        labels.values.row(row("m0081V")),
        array![5650.0, 4.40, -0.90]
    );

    // `0407 99999 9999 9999` and `0251 35950 3.20 9999`.
    assert!(labels.values.row(row("m0407V")).iter().all(|v| v.is_nan()));
    let hot = labels.values.row(row("m0251V"));
    assert_eq!((hot[0], hot[1]), (35950.0, 3.20));
    assert!(hot[2].is_nan());
    Ok(())
}

#[test]
fn miles_bin_by_4() -> TestResult {
    let binned = miles_spectra()?.bin(4)?;
    assert_eq!(binned.flux.dim(), (MILES_STARS, MILES_PIXELS / 4));
    assert!((binned.wavelength[0] - (4800.5 + 1.35)).abs() < 1e-9);

    // Mean of original pixels 1400..1404 of m0081V, from Python.
    let row = binned
        .ids
        .iter()
        .position(|id| id.ends_with("m0081V"))
        .unwrap();
    assert!((binned.flux[[row, 0]] - 1.15516825).abs() < 1e-12);
    Ok(())
}

#[test]
fn bin_known_means() -> TestResult {
    let set = SpectraSet {
        ids: vec!["a".into()],
        wavelength: Array1::range(0.0, 11.0, 1.0),
        flux: Array2::from_shape_vec(
            (1, 11),
            vec![0., 1., 2., 3., 4., 5., f64::NAN, 7., 8., 9., 10.],
        )?,
        resampled: vec![],
    };
    let binned = set.bin(4)?;

    // Groups {0..3}, {4..7} (one NaN, so the mean of 4, 5, 7); pixels 8..10 dropped.
    assert_eq!(binned.wavelength, array![1.5, 5.5]);
    assert_eq!(binned.flux, array![[1.5, 16.0 / 3.0]]);
    assert!(set.bin(0).is_err());
    Ok(())
}

#[test]
fn resample_linear_exact() -> TestResult {
    let line = |w: f64| 3.0 - 0.002 * w;
    let grid_a = Array1::from_shape_fn(200, |i| 4000.0 + 0.9 * i as f64);
    let grid_b = Array1::from_shape_fn(200, |i| 4000.35 + 0.9 * i as f64);
    let spectra = vec![
        Spectrum {
            id: "a".into(),
            flux: grid_a.mapv(line),
            wavelength: grid_a.clone(),
        },
        Spectrum {
            id: "b".into(),
            flux: grid_b.mapv(line),
            wavelength: grid_b.clone(),
        },
    ];

    let set = SpectraSet::from_spectra(spectra)?;

    // The common grid is a's, cut to where b also has pixels: 4000.9 .. 4178.2.
    assert_eq!(set.resampled, ["b"]);
    assert_eq!(set.n_pixels(), 199);
    assert_eq!(set.wavelength[0], grid_a[1]);
    for (j, &w) in set.wavelength.iter().enumerate() {
        assert!((set.flux[[1, j]] - line(w)).abs() < 1e-12, "pixel {j}");
        assert_eq!(set.flux[[0, j]], line(w));
    }

    let disjoint = vec![
        Spectrum {
            id: "a".into(),
            flux: grid_a.clone(),
            wavelength: grid_a.clone(),
        },
        Spectrum {
            id: "far".into(),
            flux: grid_a.clone(),
            wavelength: grid_a.mapv(|w| w + 1000.0),
        },
    ];
    let error = SpectraSet::from_spectra(disjoint).unwrap_err();
    assert!(
        matches!(&error, SurveyError::NoOverlap { id, .. } if id == "far"),
        "{error:?}"
    );
    Ok(())
}

#[test]
fn window_keeps_range() -> TestResult {
    let set = miles_spectra()?.window(5000.0, 5100.0)?;
    assert!(
        set.wavelength
            .iter()
            .all(|&w| (5000.0..=5100.0).contains(&w))
    );
    // 5000.0 is between pixels (4999.7, 5000.6); 5100.0 between 5099.6 and 5100.5.
    assert_eq!(set.n_pixels(), 111);
    assert!(miles_spectra()?.window(9000.0, 9100.0).is_err());
    Ok(())
}

#[test]
fn normalize_median_scale_free() {
    let flux = array![2.0, -1.0, 4.0, f64::NAN, 8.0, 0.0, 6.0];
    let scaled = flux.mapv(|v| 3.7 * v);

    // Positive pixels 2, 4, 6, 8: median 5.
    assert_eq!(survey::median_positive(flux.view()), Some(5.0));
    let a = survey::normalize_median(flux.view()).unwrap();
    let b = survey::normalize_median(scaled.view()).unwrap();
    for j in 0..flux.len() {
        if [1, 3, 5].contains(&j) {
            assert!(
                a[j].is_nan() && b[j].is_nan(),
                "pixel {j} should be missing"
            );
        } else {
            assert!((a[j] - b[j]).abs() < 1e-15, "pixel {j}");
        }
    }
    assert_eq!(a[4], 8.0 / 5.0);
    assert_eq!(survey::normalize_median(array![-1.0, 0.0].view()), None);
}

/// A smooth continuum (a Planck curve at 5800 K over 4800..5450 Å, scaled to about 1)
/// times 40 Gaussian absorption lines.
fn lined_spectrum() -> (Array1<f64>, Array1<f64>, Array1<f64>) {
    let wavelength = Array1::from_shape_fn(720, |i| 4800.5 + 0.9 * i as f64);
    let planck = |w: f64| {
        let x = 1.438_777e8 / (w * 5800.0);
        1.0 / (w.powi(5) * (x.exp() - 1.0))
    };
    let scale = planck(5100.0);
    let continuum = wavelength.mapv(|w| planck(w) / scale);

    // Line centres, depths and widths from a fixed linear congruential sequence.
    let mut state: u64 = 12345;
    let mut uniform = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let lines: Vec<(f64, f64, f64)> = (0..40)
        .map(|_| {
            (
                4800.0 + 650.0 * uniform(),
                0.1 + 0.6 * uniform(),
                0.8 + 2.0 * uniform(),
            )
        })
        .collect();
    let absorption = wavelength.mapv(|w| {
        lines
            .iter()
            .map(|&(c, d, s)| 1.0 - d * (-0.5 * ((w - c) / s).powi(2)).exp())
            .product::<f64>()
    });
    let flux = &continuum * &absorption;
    (wavelength, continuum, flux)
}

#[test]
fn normalize_continuum_recovers() {
    let (wavelength, truth, flux) = lined_spectrum();
    let fit = ContinuumFit {
        degree: 3,
        ..ContinuumFit::default()
    };

    let continuum = fit.continuum(wavelength.view(), flux.view()).unwrap();

    // Noise-free: the clipped fit finds the continuum under 40 lines to 1e-4 (measured 9e-6).
    let worst = (&continuum / &truth - 1.0)
        .mapv(f64::abs)
        .fold(0.0_f64, |a, &b| a.max(b));
    assert!(worst < 1e-4, "worst relative error {worst}");

    // An unclipped fit of the same degree is pulled down by the lines, far past that.
    let unclipped = ContinuumFit {
        max_iter: 1,
        ..fit.clone()
    };
    let pulled = unclipped.continuum(wavelength.view(), flux.view()).unwrap();
    let bias = (&pulled / &truth - 1.0).mean().unwrap();
    assert!(bias < -0.01, "unclipped mean bias {bias}");

    // The set-level call divides by the same continuum.
    let set = SpectraSet {
        ids: vec!["s".into()],
        wavelength: wavelength.clone(),
        flux: flux.clone().insert_axis(lux::dsl::ndarray::Axis(0)),
        resampled: vec![],
    };
    let normalized = set.normalize(&Normalization::Continuum(fit)).unwrap();
    let expected = &flux / &continuum;
    assert!(
        normalized
            .flux
            .row(0)
            .iter()
            .zip(&expected)
            .all(|(a, b)| (a - b).abs() < 1e-12)
    );
}

#[test]
fn labels_csv_unknown_column() -> TestResult {
    let dir = scratch("csv");
    let path = write(
        &dir,
        "labels.csv",
        b"name, teff, logg\nstar_a, 5000, 4.5\nstar_b, , n/a\n",
    );

    let labels = survey::read_label_csv(&path, None)?;
    assert_eq!(labels.ids, ["star_a", "star_b"]);
    assert_eq!(labels.names, ["teff", "logg"]);
    assert_eq!(labels.values.row(0), array![5000.0, 4.5]);
    assert!(labels.values.row(1).iter().all(|v| v.is_nan()));

    let error = labels.select(&["teff", "mass"]).unwrap_err();
    assert!(matches!(&error, SurveyError::UnknownColumn { column, .. } if column == "mass"));
    let message = error.to_string();
    assert!(
        message.contains("labels.csv") && message.contains("mass"),
        "{message}"
    );
    assert!(message.contains("teff, logg"), "{message}");

    let logg = labels.select(&["logg"])?;
    assert_eq!(logg.names, ["logg"]);
    assert_eq!(logg.values[[0, 0]], 4.5);
    Ok(())
}

#[test]
fn labels_npz_columns() -> TestResult {
    use ndarray_npy::NpzWriter;

    let dir = scratch("npz");
    let path = dir.join("labels.npz");
    let mut npz = NpzWriter::new(std::fs::File::create(&path)?);
    npz.add_array("teff", &array![5000.0, 6000.0])?;
    npz.add_array("abund", &array![[0.1_f32, 0.2], [0.3, 0.4]])?;
    npz.finish()?;

    let labels = survey::read_labels(&path)?;
    assert_eq!(labels.ids, ["0", "1"]);
    assert_eq!(labels.column("teff")?, array![5000.0, 6000.0]);
    assert_eq!(
        labels.column("abund[1]")?,
        array![0.2_f32 as f64, 0.4_f32 as f64]
    );
    Ok(())
}

#[test]
fn errors_assumed() -> TestResult {
    let flux = array![[1.0, 0.01, -0.5, f64::NAN, 2.0]];

    // Median positive flux 1.0, floor 0.1 of it: max(|f|, 0.1) / 50.
    let sigma = survey::flux_errors(&flux, 50.0, 0.1)?;
    assert_eq!(
        sigma.row(0).slice(lux::dsl::ndarray::s![..3]),
        array![0.02, 0.002, 0.01]
    );
    assert!(sigma[[0, 3]].is_infinite());
    assert_eq!(sigma[[0, 4]], 0.04);
    assert!(survey::flux_errors(&flux, 0.0, 0.1).is_err());

    let labels = survey::read_miles_params(&miles_dir().join("MILES_params.db"))?;
    let errors = survey::label_errors(&labels, &LabelErrors::default())?;
    let row = labels.ids.iter().position(|id| id == "m0081V").unwrap();
    assert!((errors[[row, 0]] - 0.02 * 5650.0).abs() < 1e-9);
    assert_eq!((errors[[row, 1]], errors[[row, 2]]), (0.2, 0.1));
    let missing = labels.ids.iter().position(|id| id == "m0407V").unwrap();
    assert!(errors.row(missing).iter().all(|e| e.is_infinite()));

    let partial = LabelErrors {
        rules: vec![("teff".into(), survey::AssumedError::Absolute(50.0))],
    };
    let error = survey::label_errors(&labels, &partial).unwrap_err();
    assert!(matches!(&error, SurveyError::NoAssumedError { column, .. } if column == "logg"));
    Ok(())
}

#[test]
fn miles_params_malformed_row_skipped() {
    let dir = scratch("miles-malformed");
    let path = dir.join("MILES_params.db");
    let text = "# MILES parameters\n0001 5000 4.5 0.1\n022.  7950 3.95 0.35\n0003 99999 9999 -0.5\n";
    std::fs::write(&path, text).unwrap();

    let table = survey::read_miles_params(&path).unwrap();
    assert_eq!(table.ids, ["m0001V", "m0003V"]);
    assert_eq!(table.skipped, ["line 3: MILES number `022.` is not a number"]);
    assert!(table.values[[1, 0]].is_nan());
    assert_eq!(table.values[[1, 2]], -0.5);
}
