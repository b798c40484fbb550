//! Every block the graph proves linear-Gaussian is solved exactly: after one solve the
//! gradient of the loss over that block vanishes, whatever the model's form.

use lux::dsl::ndarray::Array2;
use lux::dsl::{Dataset, Model, ModelBuilder, Prior};
use lux::infer::{BlockMethod, BlockWls, Engine, FitOptions};
use rand::{SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, StandardNormal, Uniform};

const N: usize = 60;

/// Random data of the right sizes for every output of `model`, with errors in [0.05, 0.5]
/// and about 5% of the elements missing.
fn random_data(model: &Model, seed: u64) -> Dataset {
    let mut rng = StdRng::seed_from_u64(seed);
    let errors = Uniform::new(0.05, 0.5).unwrap();
    let coin = Uniform::new(0.0, 1.0).unwrap();
    let mut data = Dataset::new();
    for obs in model.observes() {
        let values = Array2::from_shape_simple_fn((N, obs.size), || StandardNormal.sample(&mut rng));
        let errs = Array2::from_shape_simple_fn((N, obs.size), || {
            if coin.sample(&mut rng) < 0.05 { f64::INFINITY } else { errors.sample(&mut rng) }
        });
        data = data.with_errors(&obs.name, values, errs).unwrap();
    }
    data
}

/// Fits block `name` alone from a random start and returns the largest gradient element
/// over it (relative to the largest gradient at the start).
fn gradient_after_exact_solve(model: &Model, block: &str) -> f64 {
    let data = random_data(model, 3);
    let init = model.sample_params(N, 11);
    let engine = BlockWls::new(5, 1e-12).only(&[block]);

    let fit = engine.fit(model, &data, &FitOptions::from_init(init.clone())).unwrap();
    let report = fit.blocks.iter().find(|b| b.name == block).unwrap();
    assert_eq!(report.method, BlockMethod::ClosedForm, "{block}: {}", report.reason);
    assert_eq!(fit.iterations, 1, "{block}: one exact solve is the optimum");

    // The start is far from the block's optimum, so a small gradient after the solve
    // means the solve is exact, not that the start was already good.
    let at_start = model.loss_and_grad(&init, &data).unwrap();
    let structure = model.structure();
    let spec = structure.blocks.iter().find(|b| b.name == block).unwrap();
    let start_grad = if spec.params.is_empty() {
        max_abs(at_start.latents.iter())
    } else {
        spec.params
            .iter()
            .map(|&p| max_abs(at_start.param(&model.param(p).name).unwrap().iter()))
            .fold(0.0, f64::max)
    };
    assert!(start_grad > 1.0, "{block}: start gradient {start_grad:e} is already small");
    fit.max_abs_grad
}

fn max_abs<'a>(values: impl Iterator<Item = &'a f64>) -> f64 {
    values.fold(0.0, |m, v| m.max(v.abs()))
}

fn check_all_closed_form_blocks(model: &Model) {
    for block in model.structure().blocks.iter().filter(|b| b.closed_form) {
        let grad = gradient_after_exact_solve(model, &block.name);
        assert!(grad < 1e-7, "block {}: max |gradient| {grad:e} after its exact solve", block.name);
    }
}

fn lux(b: &mut ModelBuilder) {
    let z = b.latent("z", 3, Prior::standard_normal()).unwrap();
    let a = b.param("A", &[2, 3], Prior::standard_normal()).unwrap();
    let m = b.param("B", &[7, 3], Prior::normal(0.5, 2.0)).unwrap();
    let label = b.linear(a, z).unwrap();
    let flux = b.linear(m, z).unwrap();
    b.observe("label", label, None).unwrap();
    b.observe("flux", flux, None).unwrap();
}

#[test]
fn lux_blocks_are_exact() {
    let mut b = Model::builder();
    lux(&mut b);
    check_all_closed_form_blocks(&b.build().unwrap());
}

#[test]
fn affine_blocks_are_exact() {
    let mut b = Model::builder();
    let z = b.latent("z", 3, Prior::normal(0.2, 1.5)).unwrap();
    let a = b.param("A", &[6, 3], Prior::standard_normal()).unwrap();
    let c = b.param("c", &[6], Prior::Flat).unwrap();
    let flux = b.affine(a, z, c).unwrap();
    b.observe("flux", flux, None).unwrap();
    check_all_closed_form_blocks(&b.build().unwrap());
}

#[test]
fn sliced_latents_blocks_are_exact() {
    let mut b = Model::builder();
    let z = b.latent("z", 4, Prior::standard_normal()).unwrap();
    let head = b.slice(z, 0, 2).unwrap();
    let tail = b.slice(z, 1, 4).unwrap();
    let a = b.param("A", &[2, 2], Prior::standard_normal()).unwrap();
    let m = b.param("B", &[8, 3], Prior::standard_normal()).unwrap();
    let label = b.linear(a, head).unwrap();
    let flux = b.linear(m, tail).unwrap();
    b.observe("label", label, None).unwrap();
    b.observe("flux", flux, None).unwrap();
    check_all_closed_form_blocks(&b.build().unwrap());
}

#[test]
fn concatenated_branches_are_exact() {
    let mut b = Model::builder();
    let z = b.latent("z", 3, Prior::standard_normal()).unwrap();
    let w = b.latent("w", 2, Prior::standard_normal()).unwrap();
    let a = b.param("A", &[4, 3], Prior::standard_normal()).unwrap();
    let m = b.param("B", &[3, 2], Prior::standard_normal()).unwrap();
    let c = b.param("c", &[3], Prior::normal(1.0, 1.0)).unwrap();
    let first = b.linear(a, z).unwrap();
    let second = b.affine(m, w, c).unwrap();
    let raw = b.slice(z, 0, 1).unwrap();
    let all = b.concat(&[first, raw, second]).unwrap();
    b.observe("flux", all, None).unwrap();
    let model = b.build().unwrap();
    assert!(model.structure().blocks.iter().all(|b| b.closed_form));
    check_all_closed_form_blocks(&model);
}

#[test]
fn bias_alone_is_exact() {
    let mut b = Model::builder();
    let y = b.latent("y", 2, Prior::standard_normal()).unwrap();
    let c = b.param("c", &[2], Prior::Flat).unwrap();
    let label = b.add_bias(y, c).unwrap();
    b.observe("label", label, None).unwrap();
    check_all_closed_form_blocks(&b.build().unwrap());
}

#[test]
fn cannon_coefficients_are_exact() {
    let mut b = Model::builder();
    let y = b.latent("y", 2, Prior::standard_normal()).unwrap();
    let features = b.poly(y, 2).unwrap();
    let theta = b.param("theta", &[5, 6], Prior::normal(0.0, 10.0)).unwrap();
    let flux = b.linear(theta, features).unwrap();
    b.observe("label", y, None).unwrap();
    b.observe("flux", flux, None).unwrap();
    let model = b.build().unwrap();
    let structure = model.structure();
    assert!(!structure.latent_block().closed_form);
    let grad = gradient_after_exact_solve(&model, "flux:mean");
    assert!(grad < 1e-7, "max |gradient| {grad:e} after the exact solve");
}
