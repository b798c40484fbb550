//! Sets of spectra on one wavelength grid: loading, resampling, windows and binning.

use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2, ArrayView1, Axis, s};

use super::SurveyError;
use super::fits::{self, FitsTable, Spectrum};

/// N spectra on one wavelength grid of P pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct SpectraSet {
    /// One id per spectrum (the file stem for spectra read from files).
    pub ids: Vec<String>,
    /// Wavelength of each pixel in Å, increasing.
    pub wavelength: Array1<f64>,
    /// N × P fluxes; NaN marks a missing pixel.
    pub flux: Array2<f64>,
    /// Ids of the spectra that were linearly interpolated onto the grid because their
    /// own grid differed from it; empty when all grids agreed.
    pub resampled: Vec<String>,
}

impl SpectraSet {
    /// Number of spectra N.
    pub fn n_spectra(&self) -> usize {
        self.ids.len()
    }

    /// Number of pixels P.
    pub fn n_pixels(&self) -> usize {
        self.wavelength.len()
    }

    /// Puts spectra on one grid.
    ///
    /// The grid is that of the first spectrum, cut to the wavelength range that every
    /// spectrum covers, so nothing is extrapolated. A spectrum whose grid is the same
    /// (same length, every wavelength within 1e-4 pixel) is copied; any other is
    /// resampled by linear interpolation of flux between its two nearest pixels, and its
    /// id is listed in [`SpectraSet::resampled`]. Linear interpolation keeps flux
    /// density, not integrated flux: resampling to much coarser pixels should go
    /// through [`SpectraSet::bin`] instead. Spectra stored with decreasing wavelength
    /// are reversed first.
    pub fn from_spectra(spectra: Vec<Spectrum>) -> Result<Self, SurveyError> {
        let spectra: Vec<Spectrum> = spectra.into_iter().map(increasing).collect();
        let Some(first) = spectra.first() else {
            return Ok(Self {
                ids: Vec::new(),
                wavelength: Array1::zeros(0),
                flux: Array2::zeros((0, 0)),
                resampled: Vec::new(),
            });
        };

        let (mut lo, mut hi) = (f64::NEG_INFINITY, f64::INFINITY);
        for spectrum in &spectra {
            let (a, b) = range(&spectrum.wavelength);
            lo = lo.max(a);
            hi = hi.min(b);
            if lo > hi {
                return Err(SurveyError::NoOverlap {
                    id: spectrum.id.clone(),
                    lo: a,
                    hi: b,
                });
            }
        }

        let tolerance = 1e-4 * pixel_step(&first.wavelength);
        let keep: Vec<usize> = (0..first.wavelength.len())
            .filter(|&i| {
                first.wavelength[i] >= lo - tolerance && first.wavelength[i] <= hi + tolerance
            })
            .collect();
        let wavelength = first.wavelength.select(Axis(0), &keep);

        let mut flux = Array2::zeros((spectra.len(), wavelength.len()));
        let mut resampled = Vec::new();
        for (i, spectrum) in spectra.iter().enumerate() {
            let same_grid = spectrum.wavelength.len() == first.wavelength.len()
                && spectrum
                    .wavelength
                    .iter()
                    .zip(&first.wavelength)
                    .all(|(a, b)| (a - b).abs() <= tolerance);
            if same_grid {
                flux.row_mut(i)
                    .assign(&spectrum.flux.select(Axis(0), &keep));
            } else {
                let row = interpolate(
                    spectrum.wavelength.view(),
                    spectrum.flux.view(),
                    wavelength.view(),
                );
                flux.row_mut(i).assign(&row);
                resampled.push(spectrum.id.clone());
            }
        }

        Ok(Self {
            ids: spectra.into_iter().map(|s| s.id).collect(),
            wavelength,
            flux,
            resampled,
        })
    }

    /// Returns the pixels with `lo <= wavelength <= hi` (Å).
    pub fn window(&self, lo: f64, hi: f64) -> Result<Self, SurveyError> {
        let keep: Vec<usize> = (0..self.n_pixels())
            .filter(|&i| self.wavelength[i] >= lo && self.wavelength[i] <= hi)
            .collect();
        if keep.is_empty() {
            let (start, end) = range(&self.wavelength);
            return Err(SurveyError::EmptyWindow { lo, hi, start, end });
        }
        Ok(Self {
            ids: self.ids.clone(),
            wavelength: self.wavelength.select(Axis(0), &keep),
            flux: self.flux.select(Axis(1), &keep),
            resampled: self.resampled.clone(),
        })
    }

    /// Bins by an integer factor: each group of `factor` consecutive pixels becomes one
    /// pixel whose wavelength is the mean of the group's and whose flux is the mean of
    /// the group's finite fluxes (NaN if none is finite). The last `P % factor` pixels
    /// are dropped, so 4300 pixels binned by 4 give 1075.
    pub fn bin(&self, factor: usize) -> Result<Self, SurveyError> {
        if factor == 0 {
            return Err(SurveyError::InvalidSetting {
                name: "binning factor",
                value: 0.0,
                reason: "must be at least 1",
            });
        }
        let n_bins = self.n_pixels() / factor;
        let used = n_bins * factor;

        let wavelength = self
            .wavelength
            .slice(s![..used])
            .to_shape((n_bins, factor))
            .expect("used is n_bins × factor")
            .mean_axis(Axis(1))
            .unwrap_or_else(|| Array1::zeros(0));
        let flux = Array2::from_shape_fn((self.n_spectra(), n_bins), |(i, b)| {
            finite_mean(self.flux.slice(s![i, b * factor..(b + 1) * factor]))
        });

        Ok(Self {
            ids: self.ids.clone(),
            wavelength,
            flux,
            resampled: self.resampled.clone(),
        })
    }

    /// Returns the spectra at `rows`, in that order.
    pub fn select_rows(&self, rows: &[usize]) -> Self {
        let ids: Vec<String> = rows.iter().map(|&i| self.ids[i].clone()).collect();
        Self {
            resampled: self
                .resampled
                .iter()
                .filter(|id| ids.contains(id))
                .cloned()
                .collect(),
            ids,
            wavelength: self.wavelength.clone(),
            flux: self.flux.select(Axis(0), rows),
        }
    }
}

/// Reads FITS spectra ([`fits::read_spectrum`]) and puts them on one grid
/// ([`SpectraSet::from_spectra`]). The ids are the file stems, in the order of `paths`.
pub fn read_spectra(paths: &[PathBuf]) -> Result<SpectraSet, SurveyError> {
    let spectra = paths
        .iter()
        .map(|path| fits::read_spectrum(path))
        .collect::<Result<Vec<_>, _>>()?;
    SpectraSet::from_spectra(spectra)
}

/// Returns the files in `dir` whose names match the glob `pattern` (`*.fits`,
/// `MILES_res2.50_star_m*V.fits`), sorted by name. Finding none is an error.
pub fn find_files(dir: &Path, pattern: &str) -> Result<Vec<PathBuf>, SurveyError> {
    let matcher = glob::Pattern::new(pattern).map_err(|e| SurveyError::Pattern {
        pattern: pattern.into(),
        message: e.to_string(),
    })?;
    let entries = std::fs::read_dir(dir).map_err(|source| SurveyError::Io {
        path: dir.into(),
        source,
    })?;

    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| SurveyError::Io {
            path: dir.into(),
            source,
        })?;
        let path = entry.path();
        // Hidden files (such as the fetch script's `.fetched-from` stamp) never match.
        let name_matches = path.file_name().is_some_and(|name| {
            let name = name.to_string_lossy();
            !name.starts_with('.') && matcher.matches(&name)
        });
        if name_matches && path.is_file() {
            paths.push(path);
        }
    }
    if paths.is_empty() {
        return Err(SurveyError::NoFiles {
            dir: dir.into(),
            pattern: pattern.into(),
        });
    }
    paths.sort();
    Ok(paths)
}

/// [`find_files`] then [`read_spectra`].
pub fn read_spectra_dir(dir: &Path, pattern: &str) -> Result<SpectraSet, SurveyError> {
    read_spectra(&find_files(dir, pattern)?)
}

/// Spectra stored as rows of a FITS binary table: a vector column of fluxes, a vector
/// column of wavelengths in Å (one grid per row, or one row shared by all), and
/// optionally an id column (row numbers otherwise). Rows are put on one grid by
/// [`SpectraSet::from_spectra`].
pub fn spectra_from_table(
    table: &FitsTable,
    flux: &str,
    wavelength: &str,
    id: Option<&str>,
) -> Result<SpectraSet, SurveyError> {
    let fluxes = table.numeric(flux)?;
    let grids = table.numeric(wavelength)?;
    let shared = grids.nrows() == 1 || grids.rows().into_iter().all(|row| row == grids.row(0));
    if grids.ncols() != fluxes.ncols() {
        return Err(SurveyError::BadColumn {
            path: table.path.clone(),
            column: wavelength.into(),
            problem: format!(
                "has {} values per row and `{flux}` has {}; they must match",
                grids.ncols(),
                fluxes.ncols()
            ),
        });
    }
    let ids = match id {
        Some(name) => table.text(name)?,
        None => (0..table.n_rows).map(|i| i.to_string()).collect(),
    };

    let spectra = ids
        .into_iter()
        .enumerate()
        .map(|(i, id)| Spectrum {
            id,
            wavelength: grids.row(if shared { 0 } else { i }).to_owned(),
            flux: fluxes.row(i).to_owned(),
        })
        .collect();
    SpectraSet::from_spectra(spectra)
}

/// Linear interpolation of `y(x)` at `x_new`; `x` increasing. Points outside `x`, and
/// points next to a NaN, are NaN.
pub fn interpolate(x: ArrayView1<f64>, y: ArrayView1<f64>, x_new: ArrayView1<f64>) -> Array1<f64> {
    let n = x.len();
    x_new.mapv(|t| {
        if n == 0 || !(t >= x[0] && t <= x[n - 1]) {
            return f64::NAN;
        }
        let right = x.as_slice().map_or_else(
            || x.iter().position(|&v| v >= t).unwrap_or(n - 1),
            |xs| xs.partition_point(|&v| v < t),
        );
        if right == 0 || x[right] == t {
            return y[right];
        }
        let left = right - 1;
        let w = (t - x[left]) / (x[right] - x[left]);
        (1.0 - w) * y[left] + w * y[right]
    })
}

/// Returns the mean of the finite values, or NaN if there are none.
fn finite_mean(values: ArrayView1<f64>) -> f64 {
    let (sum, count) = values
        .iter()
        .filter(|v| v.is_finite())
        .fold((0.0, 0usize), |(s, c), v| (s + v, c + 1));
    if count == 0 {
        f64::NAN
    } else {
        sum / count as f64
    }
}

/// Returns the spectrum with increasing wavelength.
fn increasing(mut spectrum: Spectrum) -> Spectrum {
    let n = spectrum.wavelength.len();
    if n > 1 && spectrum.wavelength[0] > spectrum.wavelength[n - 1] {
        spectrum.wavelength.invert_axis(Axis(0));
        spectrum.flux.invert_axis(Axis(0));
        spectrum.wavelength = spectrum.wavelength.as_standard_layout().to_owned();
        spectrum.flux = spectrum.flux.as_standard_layout().to_owned();
    }
    spectrum
}

/// First and last wavelength.
fn range(wavelength: &Array1<f64>) -> (f64, f64) {
    match (wavelength.first(), wavelength.last()) {
        (Some(&a), Some(&b)) => (a, b),
        _ => (f64::NAN, f64::NAN),
    }
}

/// Returns the mean pixel width of a grid (1 for fewer than two pixels).
fn pixel_step(wavelength: &Array1<f64>) -> f64 {
    let n = wavelength.len();
    if n < 2 {
        1.0
    } else {
        (wavelength[n - 1] - wavelength[0]) / (n - 1) as f64
    }
}
