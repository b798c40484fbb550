//! Reading and writing data sets, parameters and scalers as NumPy `.npy` and `.npz` files.
//!
//! All arrays are float64. Every write goes to a temporary file in the target's directory
//! and is renamed into place, so a crash leaves at worst a stray temporary file, not a
//! half-written file under the target name.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ndarray::{
    Array, Array1, ArrayBase, ArrayD, ArrayView1, ArrayView2, ArrayViewD, Data, Dimension,
};
use ndarray_npy::{NpzReader, NpzWriter, ReadNpyError, ReadNpzError, WriteNpyExt, WriteNpzError};

use crate::data::Dataset;
use crate::error::DataError;
use crate::params::Params;
use crate::preprocess::ShiftScale;

/// Suffix of the inverse-variance array of each output in a data set file.
const IVAR_SUFFIX: &str = "_ivar";

/// Suffix of the 1-sigma error file of an output in a directory of `.npy` files.
const ERR_SUFFIX: &str = "_err";

/// Name of the latent matrix in a parameter file.
const LATENTS: &str = "latents";

const SHIFT_SUFFIX: &str = "_shift";
const SCALE_SUFFIX: &str = "_scale";

/// Reads a float64 `.npy` file with the dimension `D` (for example `Ix2`, or `IxDyn` for
/// any).
pub fn read_array<D: Dimension>(path: &Path) -> Result<Array<f64, D>, DataError> {
    let name = array_name(path);
    let array: ArrayD<f64> =
        ndarray_npy::read_npy(path).map_err(|e| npy_read_error(path, &name, e))?;
    with_dims(path, &name, array)
}

/// Writes a float64 `.npy` file, replacing `path` only once the file is complete.
pub fn write_array<S, D>(path: &Path, array: &ArrayBase<S, D>) -> Result<(), DataError>
where
    S: Data<Elem = f64>,
    D: Dimension,
{
    let name = array_name(path);
    write_atomic(path, |writer| {
        array.write_npy(&mut *writer).map_err(|e| DataError::Npy {
            path: path.display().to_string(),
            name: name.clone(),
            message: e.to_string(),
        })
    })
}

impl Dataset {
    /// Reads outputs from a directory of `.npy` files: `<name>.npy` contains the N×P values
    /// and `<name>_err.npy` the 1-sigma errors, or `<name>_ivar.npy` the inverse variances
    /// when there is no error file.
    pub fn from_npy_files(dir: &Path, outputs: &[&str]) -> Result<Self, DataError> {
        let mut data = Dataset::new();
        for &name in outputs {
            let values = read_array(&dir.join(format!("{name}.npy")))?;

            let err_path = dir.join(format!("{name}{ERR_SUFFIX}.npy"));
            let ivar_path = dir.join(format!("{name}{IVAR_SUFFIX}.npy"));
            data = if err_path.is_file() {
                data.with_errors(name, values, read_array(&err_path)?)?
            } else if ivar_path.is_file() {
                data.with_ivar(name, values, read_array(&ivar_path)?)?
            } else {
                return Err(DataError::Npy {
                    path: dir.display().to_string(),
                    name: format!("{name}{ERR_SUFFIX}"),
                    message: format!(
                        "found neither `{name}{ERR_SUFFIX}.npy` (1-sigma errors) nor `{name}{IVAR_SUFFIX}.npy` (inverse variances); every output needs one of them"
                    ),
                });
            };
        }
        Ok(data)
    }

    /// Writes every output as arrays `<name>` (values) and `<name>_ivar` (inverse
    /// variances, 0 for a missing element) in an `.npz` file.
    pub fn write_npz(&self, path: &Path) -> Result<(), DataError> {
        if let Some(name) = self.names().find(|n| n.ends_with(IVAR_SUFFIX)) {
            return Err(DataError::Npy {
                path: path.display().to_string(),
                name: name.to_string(),
                message: format!(
                    "an output name ending in `{IVAR_SUFFIX}` would be read back as an inverse variance; rename the output"
                ),
            });
        }
        let mut arrays: Vec<(String, ArrayView2<'_, f64>)> = Vec::new();
        for (name, output) in self.outputs() {
            arrays.push((name.to_string(), output.values().view()));
            arrays.push((format!("{name}{IVAR_SUFFIX}"), output.ivar().view()));
        }
        write_npz(path, &arrays)
    }

    /// Reads a data set written by [`Dataset::write_npz`].
    pub fn read_npz(path: &Path) -> Result<Self, DataError> {
        let mut npz = NpzFile::open(path)?;
        let names = npz.names.clone();
        let mut data = Dataset::new();
        for name in &names {
            match name.strip_suffix(IVAR_SUFFIX) {
                Some(base) if names.iter().any(|n| n == base) => continue,
                Some(base) => return Err(npz.unpaired(name, base, "values")),
                None => {
                    let ivar_name = format!("{name}{IVAR_SUFFIX}");
                    if !names.contains(&ivar_name) {
                        return Err(npz.unpaired(name, &ivar_name, "inverse variances"));
                    }
                    let values = npz.array(name)?;
                    let ivar = npz.array(&ivar_name)?;
                    data = data.with_ivar(name, values, ivar)?;
                }
            }
        }
        Ok(data)
    }
}

impl Params {
    /// Writes the latent matrix as array `latents` and every global parameter under its
    /// own name in an `.npz` file.
    pub fn write_npz(&self, path: &Path) -> Result<(), DataError> {
        if self.get(LATENTS).is_some() {
            return Err(DataError::Npy {
                path: path.display().to_string(),
                name: LATENTS.to_string(),
                message: format!(
                    "a global parameter named `{LATENTS}` would clash with the latent matrix; rename it"
                ),
            });
        }
        let mut arrays: Vec<(String, ArrayViewD<'_, f64>)> =
            vec![(LATENTS.to_string(), self.latents().view().into_dyn())];
        arrays.extend(
            self.globals()
                .map(|(name, value)| (name.to_string(), value.view())),
        );
        write_npz(path, &arrays)
    }

    /// Reads parameters written by [`Params::write_npz`]; globals keep the file's order.
    pub fn read_npz(path: &Path) -> Result<Self, DataError> {
        let mut npz = NpzFile::open(path)?;
        let mut params = Params::new(npz.array(LATENTS)?);
        for name in npz.names.clone() {
            if name != LATENTS {
                let value: ArrayD<f64> = npz.array(&name)?;
                params.insert(&name, value);
            }
        }
        Ok(params)
    }
}

impl ShiftScale {
    /// Writes arrays `<output>_shift` and `<output>_scale` for every output in an `.npz`
    /// file.
    pub fn write_npz(&self, path: &Path) -> Result<(), DataError> {
        let mut arrays: Vec<(String, ArrayView1<'_, f64>)> = Vec::new();
        for name in self.names() {
            if let (Some(shift), Some(scale)) = (self.shift(name), self.scale(name)) {
                arrays.push((format!("{name}{SHIFT_SUFFIX}"), shift));
                arrays.push((format!("{name}{SCALE_SUFFIX}"), scale));
            }
        }
        write_npz(path, &arrays)
    }

    /// Reads a scaler written by [`ShiftScale::write_npz`] and checks its constants.
    pub fn read_npz(path: &Path) -> Result<Self, DataError> {
        let mut npz = NpzFile::open(path)?;
        let names = npz.names.clone();
        let mut parts = BTreeMap::new();
        for name in &names {
            if let Some(base) = name.strip_suffix(SHIFT_SUFFIX) {
                let scale_name = format!("{base}{SCALE_SUFFIX}");
                if !names.contains(&scale_name) {
                    return Err(npz.unpaired(name, &scale_name, "scale"));
                }
                let shift: Array1<f64> = npz.array(name)?;
                let scale: Array1<f64> = npz.array(&scale_name)?;
                parts.insert(base.to_string(), (shift, scale));
            } else if let Some(base) = name.strip_suffix(SCALE_SUFFIX) {
                let shift_name = format!("{base}{SHIFT_SUFFIX}");
                if !names.contains(&shift_name) {
                    return Err(npz.unpaired(name, &shift_name, "shift"));
                }
            } else {
                return Err(DataError::Npy {
                    path: path.display().to_string(),
                    name: name.clone(),
                    message: format!(
                        "a scaler file holds only `<output>{SHIFT_SUFFIX}` and `<output>{SCALE_SUFFIX}` arrays"
                    ),
                });
            }
        }
        ShiftScale::from_parts(parts)
    }
}

/// An open `.npz` file and the names of its arrays.
struct NpzFile {
    path: PathBuf,
    reader: NpzReader<BufReader<File>>,
    names: Vec<String>,
}

impl NpzFile {
    fn open(path: &Path) -> Result<Self, DataError> {
        let file = File::open(path).map_err(|source| DataError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let not_npz = |e: ReadNpzError| DataError::Io {
            path: path.display().to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not a readable .npz archive ({e})"),
            ),
        };
        let mut reader = NpzReader::new(BufReader::new(file)).map_err(not_npz)?;
        let names = reader.names().map_err(not_npz)?;
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            names,
        })
    }

    fn array<D: Dimension>(&mut self, name: &str) -> Result<Array<f64, D>, DataError> {
        if !self.names.iter().any(|n| n == name) {
            return Err(DataError::Npy {
                path: self.path.display().to_string(),
                name: name.to_string(),
                message: format!("no such array; the file has: {}", self.names.join(", ")),
            });
        }
        let array: ArrayD<f64> = self
            .reader
            .by_name(name)
            .map_err(|e| npz_read_error(&self.path, name, e))?;
        with_dims(&self.path, name, array)
    }

    fn unpaired(&self, name: &str, partner: &str, role: &str) -> DataError {
        DataError::Npy {
            path: self.path.display().to_string(),
            name: name.to_string(),
            message: format!("array `{partner}` with the {role} that belong to it is missing"),
        }
    }
}

/// Writes named arrays to an `.npz` file through a temporary file.
fn write_npz<T: WriteNpyExt>(path: &Path, arrays: &[(String, T)]) -> Result<(), DataError> {
    write_atomic(path, |writer| {
        let mut npz = NpzWriter::new(writer);
        for (name, array) in arrays {
            npz.add_array(name.as_str(), array)
                .map_err(|e| npz_write_error(path, name, e))?;
        }
        npz.finish().map_err(|e| DataError::Io {
            path: path.display().to_string(),
            source: std::io::Error::other(format!("could not finish the .npz archive ({e})")),
        })?;
        Ok(())
    })
}

/// Runs `write` on a temporary file beside `path`, syncs it and renames it to `path`.
/// On failure the temporary file is removed and `path` is left as it was.
fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<(), DataError>,
) -> Result<(), DataError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);

    let io_error = |p: &Path, source| DataError::Io {
        path: p.display().to_string(),
        source,
    };
    let Some(file_name) = path.file_name() else {
        return Err(io_error(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file"),
        ));
    };
    let temp = path.with_file_name(format!(
        ".{}.{}-{}.tmp",
        file_name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));

    let file = File::create_new(&temp).map_err(|e| io_error(&temp, e))?;
    let result = (|| {
        let mut writer = BufWriter::new(file);
        write(&mut writer)?;
        let file = writer
            .into_inner()
            .map_err(|e| io_error(&temp, e.into_error()))?;
        file.sync_all().map_err(|e| io_error(&temp, e))?;
        fs::rename(&temp, path).map_err(|e| io_error(path, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Returns the array name of a `.npy` file, which is its file name without the extension.
fn array_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn with_dims<D: Dimension>(
    path: &Path,
    name: &str,
    array: ArrayD<f64>,
) -> Result<Array<f64, D>, DataError> {
    let found = array.shape().to_vec();
    array
        .into_dimensionality::<D>()
        .map_err(|_| DataError::ArrayDims {
            path: path.display().to_string(),
            name: name.to_string(),
            expected: D::NDIM.unwrap_or(found.len()),
            found,
        })
}

fn npy_read_error(path: &Path, name: &str, err: ReadNpyError) -> DataError {
    match err {
        ReadNpyError::Io(source) => DataError::Io {
            path: path.display().to_string(),
            source,
        },
        ReadNpyError::WrongDescriptor(_) => DataError::Npy {
            path: path.display().to_string(),
            name: name.to_string(),
            message: format!("{err}; lux reads float64 arrays only, convert the array first"),
        },
        err => DataError::Npy {
            path: path.display().to_string(),
            name: name.to_string(),
            message: err.to_string(),
        },
    }
}

fn npz_read_error(path: &Path, name: &str, err: ReadNpzError) -> DataError {
    match err {
        ReadNpzError::Npy(err) => npy_read_error(path, name, err),
        err => DataError::Npy {
            path: path.display().to_string(),
            name: name.to_string(),
            message: err.to_string(),
        },
    }
}

fn npz_write_error(path: &Path, name: &str, err: WriteNpzError) -> DataError {
    DataError::Npy {
        path: path.display().to_string(),
        name: name.to_string(),
        message: err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_failure_keeps_old_file() {
        let dir = std::env::temp_dir().join(format!("lux-io-atomic-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.npy");
        write_array(&path, &ndarray::array![1.0, 2.0]).unwrap();

        let err = write_atomic(&path, |writer| {
            std::io::Write::write_all(writer, b"partial").unwrap();
            Err(DataError::Empty {
                what: "stopped on purpose".to_string(),
            })
        });

        assert!(matches!(err, Err(DataError::Empty { .. })));
        assert_eq!(
            read_array::<ndarray::Ix1>(&path).unwrap(),
            ndarray::array![1.0, 2.0]
        );
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}
