//! A fused loss-and-gradient kernel for the Lux form: every output mean is `A_o z` or
//! `A_o z + b_o` of one latent vector `z`, with an optional intrinsic scatter.
//!
//! One pass per object computes the prediction, the weighted residual, and its
//! contributions to every gradient, reading each row of data once. It gives the same
//! numbers as the general autodiff path (tested), several times faster.

use lux_dsl::{Dataset, Expr, Model, ParamId, Params, Prior, prior::half_ln_2pi};
use ndarray::{Array2, ArrayD, Ix1, Ix2, IxDyn};
use rayon::prelude::*;

use crate::engine::Free;
use crate::gradient::Gradient;

/// Objects per parallel task: below this many per thread the split costs more than it saves.
const ROWS_PER_TASK: usize = 256;

#[derive(Debug, Clone)]
struct Layer {
    observe: usize,
    matrix: ParamId,
    bias: Option<ParamId>,
    scatter: Option<ParamId>,
}

/// The Lux layout of a model, when it has one.
#[derive(Debug, Clone)]
pub(crate) struct FusedLux {
    layers: Vec<Layer>,
}

/// Per-output values the kernel reads: Aᵀ (K×P), the bias and scatter, and data rows.
struct Prepared<'a> {
    size: usize,
    at: Vec<f64>,
    bias: Option<Vec<f64>>,
    scatter: Option<Vec<f64>>,
    values: &'a [f64],
    ivar: &'a [f64],
    n_observed: usize,
    log_ivar_sum: f64,
}

#[derive(Clone)]
struct Partial {
    loss: f64,
    grad_at: Vec<Vec<f64>>,
    grad_bias: Vec<Vec<f64>>,
    grad_scatter: Vec<Vec<f64>>,
}

impl FusedLux {
    /// Recognizes the Lux form; `None` for any other graph.
    pub(crate) fn detect(model: &Model) -> Option<Self> {
        if model.latents().len() != 1 {
            return None;
        }
        let mut layers = Vec::new();
        for (observe, obs) in model.observes().iter().enumerate() {
            let (linear, bias) = match model.expr(obs.mean) {
                Expr::AddBias { input, bias } => (*input, Some(*bias)),
                _ => (obs.mean, None),
            };
            let Expr::Linear { matrix, input } = model.expr(linear) else {
                return None;
            };
            if !matches!(model.expr(*input), Expr::Latent(_)) {
                return None;
            }
            layers.push(Layer {
                observe,
                matrix: *matrix,
                bias,
                scatter: obs.scatter,
            });
        }
        Some(Self { layers })
    }

    /// Loss over the free parameters and its gradient.
    pub(crate) fn loss_grad(&self, model: &Model, params: &Params, data: &Dataset, free: &Free) -> Gradient {
        let k = model.latent_size();
        let n = params.n_objects();
        let prepared: Vec<Option<Prepared>> = self.layers.iter().map(|layer| prepare(model, params, data, layer)).collect();
        let want_params = free.params.iter().any(|&p| p);

        let mut grad_latents = Array2::<f64>::zeros((n, k));
        let latents = params.latents().as_slice().expect("latents are in standard layout");
        let zero = Partial {
            loss: 0.0,
            grad_at: prepared.iter().map(|p| p.as_ref().map_or(Vec::new(), |p| vec![0.0; p.at.len()])).collect(),
            grad_bias: prepared.iter().map(|p| p.as_ref().map_or(Vec::new(), |p| vec![0.0; p.size])).collect(),
            grad_scatter: prepared.iter().map(|p| p.as_ref().map_or(Vec::new(), |p| vec![0.0; p.size])).collect(),
        };

        let rows_per_task = ROWS_PER_TASK.max(n.div_ceil(rayon::current_num_threads().max(1)));
        let total = grad_latents
            .as_slice_mut()
            .expect("fresh array")
            .par_chunks_mut(rows_per_task * k)
            .enumerate()
            .map(|(task, grad_chunk)| {
                let first = task * rows_per_task;
                let mut partial = zero.clone();
                accumulate(&prepared, latents, first, grad_chunk, k, want_params, &mut partial);
                partial
            })
            .reduce(|| zero.clone(), merge);

        let mut loss = total.loss;
        let mut grad_params: Vec<Option<ArrayD<f64>>> = vec![None; model.params().len()];

        for (layer, (index, prep)) in self.layers.iter().zip(prepared.iter().enumerate()) {
            let Some(prep) = prep else { continue };
            loss += constant_term(prep);
            let p = prep.size;

            let mut grad_a = ArrayD::zeros(IxDyn(&[p, k]));
            for kk in 0..k {
                for pp in 0..p {
                    grad_a[[pp, kk]] = total.grad_at[index][kk * p + pp];
                }
            }
            add_to(&mut grad_params, layer.matrix, grad_a);
            if let Some(bias) = layer.bias {
                add_to(&mut grad_params, bias, ArrayD::from_shape_vec(IxDyn(&[p]), total.grad_bias[index].clone()).unwrap());
            }
            if let Some(scatter) = layer.scatter {
                let shape = &model.param(scatter).shape;
                let g = if shape.is_empty() {
                    ArrayD::from_elem(IxDyn(&[]), total.grad_scatter[index].iter().sum())
                } else {
                    ArrayD::from_shape_vec(IxDyn(&[p]), total.grad_scatter[index].clone()).unwrap()
                };
                add_to(&mut grad_params, scatter, g);
            }
        }

        if free.latents {
            for latent in model.latents() {
                loss += add_prior(&latent.prior, params.latents().iter(), grad_latents.iter_mut());
            }
        } else {
            grad_latents.fill(0.0);
        }
        for (index, node) in model.params().iter().enumerate() {
            let grad = grad_params[index].get_or_insert_with(|| ArrayD::zeros(IxDyn(&node.shape)));
            if free.params[index] {
                let value = params.get(&node.name).expect("checked parameter");
                loss += add_prior(&node.prior, value.iter(), grad.iter_mut());
            } else {
                grad.fill(0.0);
            }
        }

        Gradient {
            loss,
            latents: grad_latents,
            params: grad_params.into_iter().map(|g| g.expect("filled above")).collect(),
        }
    }
}

fn add_to(grads: &mut [Option<ArrayD<f64>>], id: ParamId, value: ArrayD<f64>) {
    match &mut grads[id.index()] {
        Some(existing) => *existing += &value,
        slot => *slot = Some(value),
    }
}

/// Adds the prior's negative log density to the gradient and returns its value.
fn add_prior<'a>(prior: &Prior, values: impl Iterator<Item = &'a f64>, grads: impl Iterator<Item = &'a mut f64>) -> f64 {
    if matches!(prior, Prior::Flat) {
        return 0.0;
    }
    // Sum ½u² and add the per-element constant once, rather than a logarithm per element.
    let (center, scale) = match *prior {
        Prior::Normal { mean, scale } => (mean, scale),
        Prior::HalfNormal { scale } => (0.0, scale),
        Prior::Flat => unreachable!("handled above"),
    };
    let precision = 1.0 / (scale * scale);
    let mut squares = 0.0;
    let mut count = 0usize;
    let mut negative = false;
    for (&x, g) in values.zip(grads) {
        let u = x - center;
        squares += u * u;
        *g += u * precision;
        count += 1;
        negative |= x < 0.0;
    }
    if prior.is_positive() && negative {
        return f64::INFINITY;
    }
    0.5 * squares * precision + count as f64 * prior.neg_log_density(center)
}

fn prepare<'a>(model: &Model, params: &Params, data: &'a Dataset, layer: &Layer) -> Option<Prepared<'a>> {
    let obs = &model.observes()[layer.observe];
    let out = data.output(&obs.name)?;
    let a = params
        .get(&model.param(layer.matrix).name)
        .expect("checked parameter")
        .view()
        .into_dimensionality::<Ix2>()
        .expect("matrix");
    let at: Vec<f64> = a.t().iter().copied().collect();
    let bias = layer.bias.map(|b| {
        params
            .get(&model.param(b).name)
            .expect("checked parameter")
            .view()
            .into_dimensionality::<Ix1>()
            .expect("vector")
            .to_vec()
    });
    let scatter = model.scatter_values(params, obs);
    Some(Prepared {
        size: obs.size,
        at,
        bias,
        scatter,
        values: out.values().as_slice().expect("standard layout"),
        ivar: out.ivar().as_slice().expect("standard layout"),
        n_observed: out.n_observed(),
        log_ivar_sum: out.log_ivar_sum(),
    })
}

/// ½ Σ [ln 2π − ln w] over observed elements without scatter (constant in the
/// parameters), or ½ ln 2π per observed element with scatter (the ln v part is in the
/// kernel).
fn constant_term(prep: &Prepared) -> f64 {
    let mut total = prep.n_observed as f64 * half_ln_2pi();
    if prep.scatter.is_none() {
        total -= 0.5 * prep.log_ivar_sum;
    }
    total
}

/// Runs [`accumulate_body`] compiled for AVX-512, or for AVX2 with FMA, when the CPU
/// has them. The choice is made at run time, so the library still runs on any x86-64.
fn accumulate(
    prepared: &[Option<Prepared>],
    latents: &[f64],
    first: usize,
    grad_chunk: &mut [f64],
    k: usize,
    want_params: bool,
    partial: &mut Partial,
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports the features the function is compiled for.
        unsafe { accumulate_avx512(prepared, latents, first, grad_chunk, k, want_params, partial) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function is compiled for.
        unsafe { accumulate_avx2(prepared, latents, first, grad_chunk, k, want_params, partial) };
        return;
    }
    accumulate_body::<false>(prepared, latents, first, grad_chunk, k, want_params, partial);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn accumulate_avx2(
    prepared: &[Option<Prepared>],
    latents: &[f64],
    first: usize,
    grad_chunk: &mut [f64],
    k: usize,
    want_params: bool,
    partial: &mut Partial,
) {
    accumulate_body::<true>(prepared, latents, first, grad_chunk, k, want_params, partial);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn accumulate_avx512(
    prepared: &[Option<Prepared>],
    latents: &[f64],
    first: usize,
    grad_chunk: &mut [f64],
    k: usize,
    want_params: bool,
    partial: &mut Partial,
) {
    accumulate_body::<true>(prepared, latents, first, grad_chunk, k, want_params, partial);
}

/// `a·b + c`, as one fused instruction where the caller is compiled with FMA.
#[inline(always)]
fn fmadd<const FMA: bool>(a: f64, b: f64, c: f64) -> f64 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

#[inline(always)]
fn accumulate_body<const FMA: bool>(
    prepared: &[Option<Prepared>],
    latents: &[f64],
    first: usize,
    grad_chunk: &mut [f64],
    k: usize,
    want_params: bool,
    partial: &mut Partial,
) {
    let max_size = prepared.iter().flatten().map(|p| p.size).max().unwrap_or(0);
    let mut scratch = Scratch {
        pred: vec![0.0; GROUP * max_size],
        weighted: vec![0.0; GROUP * max_size],
    };

    let rows = grad_chunk.len() / k;
    let grouped = rows - rows % GROUP;
    for (group, grad_z) in grad_chunk[..grouped * k].chunks_exact_mut(GROUP * k).enumerate() {
        let n = first + group * GROUP;
        star_group::<GROUP, FMA>(prepared, &latents[n * k..(n + GROUP) * k], n, grad_z, k, want_params, partial, &mut scratch);
    }
    for (row, grad_z) in grad_chunk[grouped * k..].chunks_exact_mut(k).enumerate() {
        let n = first + grouped + row;
        star_group::<1, FMA>(prepared, &latents[n * k..(n + 1) * k], n, grad_z, k, want_params, partial, &mut scratch);
    }
}

/// Objects handled together, so each element of Aᵀ and of its gradient is loaded once
/// per group rather than once per object.
const GROUP: usize = 4;

struct Scratch {
    pred: Vec<f64>,
    weighted: Vec<f64>,
}

/// Adds the loss and gradient terms of `S` consecutive objects starting at row `n`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn star_group<const S: usize, const FMA: bool>(
    prepared: &[Option<Prepared>],
    z: &[f64],
    n: usize,
    grad_z: &mut [f64],
    k: usize,
    want_params: bool,
    partial: &mut Partial,
    scratch: &mut Scratch,
) {
    for (index, prep) in prepared.iter().enumerate() {
        let Some(prep) = prep else { continue };
        let p = prep.size;
        let y = &prep.values[n * p..(n + S) * p];
        let w = &prep.ivar[n * p..(n + S) * p];
        let pred = &mut scratch.pred[..S * p];
        let weighted = &mut scratch.weighted[..S * p];

        predict_group::<S, FMA>(&prep.at, prep.bias.as_deref(), z, k, pred);

        match &prep.scatter {
            None => {
                for i in 0..S * p {
                    pred[i] -= y[i];
                    weighted[i] = pred[i] * w[i];
                }
                partial.loss += 0.5 * dot::<FMA>(pred, weighted);
            }
            Some(sc) => {
                let grad_s = &mut partial.grad_scatter[index];
                for i in 0..S * p {
                    let j = i % p;
                    if w[i] > 0.0 {
                        let v = 1.0 / w[i] + sc[j] * sc[j];
                        let inv = 1.0 / v;
                        let r = pred[i] - y[i];
                        partial.loss += 0.5 * (r * r * inv + v.ln());
                        weighted[i] = r * inv;
                        grad_s[j] += sc[j] * (inv - r * r * inv * inv);
                    } else {
                        weighted[i] = 0.0;
                    }
                }
            }
        }

        if want_params {
            gradients_group::<S, FMA>(&prep.at, weighted, z, k, grad_z, &mut partial.grad_at[index]);
            if prep.bias.is_some() {
                for row in weighted.chunks_exact(p) {
                    for (g, &r) in partial.grad_bias[index].iter_mut().zip(row) {
                        *g += r;
                    }
                }
            }
        } else {
            for (row, grad_row) in weighted.chunks_exact(p).zip(grad_z.chunks_exact_mut(k)) {
                for (kk, g) in grad_row.iter_mut().enumerate() {
                    *g += dot::<FMA>(&prep.at[kk * p..(kk + 1) * p], row);
                }
            }
        }
    }
}

/// `pred[s] = b + Σ_k z[s]_k Aᵀ[k, :]` for the `S` objects of a group, eight elements
/// at a time so the running sums stay in registers across the K terms.
#[inline(always)]
fn predict_group<const S: usize, const FMA: bool>(at: &[f64], bias: Option<&[f64]>, z: &[f64], k: usize, pred: &mut [f64]) {
    let p = pred.len() / S;
    let split = p - p % 8;
    for start in (0..split).step_by(8) {
        let init: [f64; 8] = match bias {
            Some(b) => b[start..start + 8].try_into().expect("chunk of 8"),
            None => [0.0; 8],
        };
        let mut lanes = [init; S];
        for kk in 0..k {
            let a: &[f64; 8] = at[kk * p + start..kk * p + start + 8].try_into().expect("chunk of 8");
            for s in 0..S {
                let zk = z[s * k + kk];
                for l in 0..8 {
                    lanes[s][l] = fmadd::<FMA>(zk, a[l], lanes[s][l]);
                }
            }
        }
        for s in 0..S {
            pred[s * p + start..s * p + start + 8].copy_from_slice(&lanes[s]);
        }
    }
    for s in 0..S {
        for i in split..p {
            let mut sum = bias.map_or(0.0, |b| b[i]);
            for kk in 0..k {
                sum = fmadd::<FMA>(z[s * k + kk], at[kk * p + i], sum);
            }
            pred[s * p + i] = sum;
        }
    }
}

/// For the `S` objects of a group: `grad_z[s]_k += Aᵀ[k, :] · r[s]` and
/// `grad_Aᵀ[k, :] += Σ_s z[s]_k r[s]`, in one pass over each row of Aᵀ.
#[inline(always)]
fn gradients_group<const S: usize, const FMA: bool>(
    at: &[f64],
    weighted: &[f64],
    z: &[f64],
    k: usize,
    grad_z: &mut [f64],
    grad_at: &mut [f64],
) {
    let p = weighted.len() / S;
    let split = p - p % 8;
    for kk in 0..k {
        let a_row = &at[kk * p..(kk + 1) * p];
        let g_row = &mut grad_at[kk * p..(kk + 1) * p];
        let mut zk = [0.0; S];
        for s in 0..S {
            zk[s] = z[s * k + kk];
        }
        let mut lanes = [[0.0; 8]; S];
        for start in (0..split).step_by(8) {
            let a: &[f64; 8] = a_row[start..start + 8].try_into().expect("chunk of 8");
            let mut g: [f64; 8] = g_row[start..start + 8].try_into().expect("chunk of 8");
            for s in 0..S {
                let r: &[f64; 8] = weighted[s * p + start..s * p + start + 8].try_into().expect("chunk of 8");
                for l in 0..8 {
                    lanes[s][l] = fmadd::<FMA>(a[l], r[l], lanes[s][l]);
                    g[l] = fmadd::<FMA>(zk[s], r[l], g[l]);
                }
            }
            g_row[start..start + 8].copy_from_slice(&g);
        }
        for s in 0..S {
            let mut tail = 0.0;
            for i in split..p {
                let r = weighted[s * p + i];
                tail = fmadd::<FMA>(a_row[i], r, tail);
                g_row[i] = fmadd::<FMA>(zk[s], r, g_row[i]);
            }
            grad_z[s * k + kk] += lanes[s].iter().sum::<f64>() + tail;
        }
    }
}

/// Dot product with eight independent partial sums, so that the compiler can keep
/// them in vector registers instead of waiting on one running sum.
#[inline(always)]
fn dot<const FMA: bool>(a: &[f64], b: &[f64]) -> f64 {
    let mut lanes = [0.0; 8];
    let split = a.len() - a.len() % 8;
    for (ca, cb) in a[..split].chunks_exact(8).zip(b[..split].chunks_exact(8)) {
        for l in 0..8 {
            lanes[l] = fmadd::<FMA>(ca[l], cb[l], lanes[l]);
        }
    }
    let tail: f64 = a[split..].iter().zip(&b[split..]).map(|(x, y)| x * y).sum();
    lanes.iter().sum::<f64>() + tail
}

fn merge(mut a: Partial, b: Partial) -> Partial {
    a.loss += b.loss;
    for (x, y) in a.grad_at.iter_mut().zip(&b.grad_at) {
        x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
    }
    for (x, y) in a.grad_bias.iter_mut().zip(&b.grad_bias) {
        x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
    }
    for (x, y) in a.grad_scatter.iter_mut().zip(&b.grad_scatter) {
        x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use lux_dsl::Prior;
    use ndarray::Array2;
    use rand::{SeedableRng, rngs::StdRng};
    use rand_distr::{Distribution, StandardNormal, Uniform};

    /// Builds a Lux model with a bias and a per-pixel scatter on the flux, and random data
    /// with missing elements for `n` objects.
    fn problem(n: usize) -> (Model, Params, Dataset) {
        let mut b = Model::builder();
        let z = b.latent("z", 5, Prior::standard_normal()).unwrap();
        let a = b.param("A", &[3, 5], Prior::normal(0.1, 2.0)).unwrap();
        let m = b.param("B", &[19, 5], Prior::standard_normal()).unwrap();
        let c = b.param("c", &[19], Prior::Flat).unwrap();
        let s = b.param("s", &[19], Prior::half_normal(0.5)).unwrap();
        let label = b.linear(a, z).unwrap();
        let flux = b.affine(m, z, c).unwrap();
        b.observe("label", label, None).unwrap();
        b.observe("flux", flux, Some(s)).unwrap();
        let model = b.build().unwrap();

        let mut rng = StdRng::seed_from_u64(5);
        let errors = Uniform::new(0.1, 1.0).unwrap();
        let mut random = |rows: usize, cols: usize, missing_every: usize| {
            let values = Array2::from_shape_simple_fn((rows, cols), || StandardNormal.sample(&mut rng));
            let mut count = 0;
            let errs = Array2::from_shape_simple_fn((rows, cols), || {
                count += 1;
                if count % missing_every == 0 { f64::NAN } else { errors.sample(&mut rng) }
            });
            (values, errs)
        };
        let (label, label_err) = random(n, 3, 7);
        let (flux, flux_err) = random(n, 19, 11);
        let data = Dataset::new()
            .with_errors("label", label, label_err)
            .unwrap()
            .with_errors("flux", flux, flux_err)
            .unwrap();
        (model.clone(), model.sample_params(n, 9), data)
    }

    fn assert_close(name: &str, a: &[f64], b: &[f64]) {
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= 1e-9 * (1.0 + y.abs()), "{name}[{i}]: fused {x} vs autodiff {y}");
        }
    }

    #[test]
    fn fused_gradient_matches_autodiff() {
        for n in [1, 6, 603] {
            let (model, params, data) = problem(n);
            let fused = FusedLux::detect(&model).expect("Lux form");
            for latents_free in [true, false] {
                let free = Free {
                    latents: latents_free,
                    params: vec![true, !latents_free, true, true],
                };
                let ours = fused.loss_grad(&model, &params, &data, &free);
                let is_fixed = |name: &str| free.is_fixed(&model, name);
                let reference = model.loss_and_grad_with(&params, &data, !free.latents, &is_fixed).unwrap();

                assert!((ours.loss - reference.loss).abs() <= 1e-10 * reference.loss.abs(), "loss");
                assert_close("latents", ours.latents.as_slice().unwrap(), reference.latents.as_slice().unwrap());
                for (index, (name, g)) in reference.params.iter().enumerate() {
                    assert_close(name, ours.params[index].as_slice().unwrap(), g.as_slice().unwrap());
                }
            }
        }
    }

    #[test]
    fn non_lux_graph_is_not_fused() {
        let mut b = Model::builder();
        let y = b.latent("y", 2, Prior::Flat).unwrap();
        let features = b.poly(y, 2).unwrap();
        let theta = b.param("theta", &[4, 6], Prior::Flat).unwrap();
        let flux = b.linear(theta, features).unwrap();
        b.observe("flux", flux, None).unwrap();
        assert!(FusedLux::detect(&b.build().unwrap()).is_none());
    }
}
