//! Parameter values: the N×K latent matrix and every global parameter by name.

use ndarray::{Array2, ArrayD, ArrayView1, ArrayView2, ArrayViewD, Dimension, Ix1, Ix2, IxDyn};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, StandardNormal};

use crate::error::DataError;
use crate::graph::Model;
use crate::prior::Prior;

/// Values of the latents (one row per object, all latent variables side by side) and of
/// the global parameters, by name.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    latents: Array2<f64>,
    globals: Vec<(String, ArrayD<f64>)>,
}

impl Params {
    /// Parameters with the given latents and no global parameter yet.
    pub fn new(latents: Array2<f64>) -> Self {
        Self {
            latents: latents.as_standard_layout().into_owned(),
            globals: Vec::new(),
        }
    }

    /// Returns the joint latent matrix, N×K.
    pub fn latents(&self) -> &Array2<f64> {
        &self.latents
    }

    /// Mutable access to the joint latent matrix.
    pub fn latents_mut(&mut self) -> &mut Array2<f64> {
        &mut self.latents
    }

    /// Replaces the latents (for example with a new set of objects).
    pub fn set_latents(&mut self, latents: Array2<f64>) {
        self.latents = latents.as_standard_layout().into_owned();
    }

    /// Sets (adds or replaces) the global parameter `name`.
    pub fn insert(&mut self, name: &str, value: ArrayD<f64>) {
        let value = value.as_standard_layout().into_owned();
        match self.globals.iter_mut().find(|(n, _)| n == name) {
            Some((_, slot)) => *slot = value,
            None => self.globals.push((name.to_string(), value)),
        }
    }

    /// Builder form of [`Params::insert`].
    pub fn with(mut self, name: &str, value: ArrayD<f64>) -> Self {
        self.insert(name, value);
        self
    }

    /// Returns the global parameter `name`.
    pub fn get(&self, name: &str) -> Option<&ArrayD<f64>> {
        self.globals.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Mutable access to the global parameter `name`.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut ArrayD<f64>> {
        self.globals.iter_mut().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Returns the global parameter `name`, or an error naming it.
    pub fn require(&self, name: &str) -> Result<&ArrayD<f64>, DataError> {
        self.get(name).ok_or_else(|| DataError::MissingParameter {
            name: name.to_string(),
        })
    }

    /// Returns the matrix parameter `name` as a 2-D view.
    pub fn matrix(&self, name: &str) -> Option<ArrayView2<'_, f64>> {
        self.get(name).and_then(|v| v.view().into_dimensionality::<Ix2>().ok())
    }

    /// Returns the vector parameter `name` as a 1-D view.
    pub fn vector(&self, name: &str) -> Option<ArrayView1<'_, f64>> {
        self.get(name).and_then(|v| v.view().into_dimensionality::<Ix1>().ok())
    }

    /// Global parameters in insertion order.
    pub fn globals(&self) -> impl Iterator<Item = (&str, &ArrayD<f64>)> {
        self.globals.iter().map(|(n, v)| (n.as_str(), v))
    }

    /// Number of objects (rows of the latent matrix).
    pub fn n_objects(&self) -> usize {
        self.latents.nrows()
    }
}

impl Model {
    /// Draws starting values from the priors: latents and Normal parameters from their
    /// prior, HalfNormal parameters from theirs, and Flat ones from Normal(0, 1).
    pub fn sample_params(&self, n_objects: usize, seed: u64) -> Params {
        self.sample_params_spread(n_objects, seed, 1.0)
    }

    /// Like [`Model::sample_params`], with every draw pulled toward its prior's center:
    /// `center + spread · (draw − center)`, the center being the mean of a Normal prior
    /// and 0 otherwise. A small spread starts a gradient fit where the products of
    /// latents and maps are small and the first steps are well behaved.
    pub fn sample_params_spread(&self, n_objects: usize, seed: u64, spread: f64) -> Params {
        let mut rng = StdRng::seed_from_u64(seed);
        let draw = |prior: &Prior, rng: &mut StdRng| {
            let center = match *prior {
                Prior::Normal { mean, .. } => mean,
                _ => 0.0,
            };
            center + spread * (draw(prior, rng) - center)
        };
        let mut latents = Array2::zeros((n_objects, self.latent_size()));
        for latent in &self.latents {
            for n in 0..n_objects {
                for k in 0..latent.size {
                    latents[[n, latent.offset + k]] = draw(&latent.prior, &mut rng);
                }
            }
        }
        let mut params = Params::new(latents);
        for node in &self.params {
            let value = ArrayD::from_shape_simple_fn(IxDyn(&node.shape), || draw(&node.prior, &mut rng));
            params.insert(&node.name, value);
        }
        params
    }

    /// Checks that `params` contains every global parameter with its declared shape,
    /// the latents have K columns, and every value is finite. A negative value under a
    /// HalfNormal prior passes (its loss is +∞), but the engines reject it as a start.
    pub fn check_params(&self, params: &Params) -> Result<(), DataError> {
        if params.latents.ncols() != self.latent_size() {
            return Err(DataError::LatentShape {
                found: params.latents.shape().to_vec(),
                expected: vec![params.latents.nrows(), self.latent_size()],
                hint: format!("the model has latent size K = {}", self.latent_size()),
            });
        }
        check_finite("latents", params.latents.view().into_dyn())?;
        for node in &self.params {
            let value = params.require(&node.name)?;
            if value.shape() != node.shape.as_slice() {
                return Err(DataError::ParamShape {
                    name: node.name.clone(),
                    found: value.shape().to_vec(),
                    expected: node.shape.clone(),
                    hint: "check the latent size and the output sizes the model was built with".to_string(),
                });
            }
            check_finite(&node.name, value.view())?;
        }
        Ok(())
    }
}

fn check_finite(name: &str, values: ArrayViewD<f64>) -> Result<(), DataError> {
    match values.indexed_iter().enumerate().find(|(_, (_, x))| !x.is_finite()) {
        Some((index, (element, &value))) => Err(DataError::NonFiniteParameter {
            name: name.to_string(),
            index,
            element: element.slice().to_vec(),
            value,
        }),
        None => Ok(()),
    }
}

fn draw(prior: &Prior, rng: &mut impl Rng) -> f64 {
    let u: f64 = StandardNormal.sample(rng);
    match *prior {
        Prior::Flat => u,
        Prior::Normal { mean, scale } => mean + scale * u,
        Prior::HalfNormal { scale } => scale * u.abs(),
    }
}
