//! Block WLS and Adam on the tutorial data set, against the reference library's figures.

mod common;

use common::*;
use lux::dsl::ndarray::Array2;
use lux::infer::{BlockWls, Engine, FitOptions, StoppingRule};

fn rmse(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    ((a - b).mapv(|x| x * x).sum() / a.len() as f64).sqrt()
}

#[test]
fn block_wls_reproduces_reference_cycles() {
    let (train, _) = seed_linear();
    let model = lux_model();
    let engine = BlockWls {
        stopping: StoppingRule::Reference,
        rebalance: false,
        accelerate: false,
        ..BlockWls::new(50, 1e-6)
    };
    let fit = engine.fit(&model, &train, &FitOptions::from_init(reference_init())).unwrap();

    let reference = [
        14488082.202669073,
        1992367.2086818223,
        116879.14676471354,
        -212427.43109873074,
        -221992.36600210884,
        -222809.2645006777,
        -222895.92728404776,
        -222907.82891767504,
        -222911.07506829902,
    ];
    assert_eq!(fit.iterations, 9);
    assert_eq!(fit.loss_history.len(), reference.len());
    for (cycle, (&ours, &theirs)) in fit.loss_history.iter().zip(&reference).enumerate() {
        let theirs = theirs + REFERENCE_LOSS_OFFSET;
        let relative = ((ours - theirs) / theirs).abs();
        assert!(relative < 1e-9, "cycle {}: {ours} vs {theirs} ({relative:e})", cycle + 1);
    }
}

#[test]
fn block_wls_reaches_the_optimum() {
    let (train, test) = seed_linear();
    let model = lux_model();
    let fit = BlockWls::new(50, 1e-6).fit(&model, &train, &FitOptions::default()).unwrap();
    for (i, l) in fit.loss_history.iter().enumerate() {
        eprintln!("cycle {}: {l:.4}", i + 1);
    }
    eprintln!("max |grad| {:e} converged {} in {:?}", fit.max_abs_grad, fit.converged, fit.wall_time);
    let optimum = -101562.16;
    assert!(fit.iterations <= 15, "{} cycles", fit.iterations);
    assert!((fit.loss - optimum).abs() < 1.0, "loss {}", fit.loss);
    assert!(fit.converged);

    let flux_only = test.with_only(&["flux"]).unwrap();
    let wls = BlockWls::new(50, 1e-6);
    let inferred = wls
        .fit(&model, &flux_only, &FitOptions::infer_latents(&model, &fit.params, test.n_objects()))
        .unwrap();
    assert_eq!(inferred.iterations, 1);
    let predicted = model.predict(&inferred.params).unwrap();
    let label_rmse = rmse(&predicted["label"], test.require("label").unwrap().values());
    let flux_rmse = rmse(&predicted["flux"], test.require("flux").unwrap().values());
    eprintln!("label rmse {label_rmse} flux rmse {flux_rmse}");
    assert!(label_rmse <= 0.0594, "label RMSE {label_rmse}");
    assert!(flux_rmse <= 0.2047, "flux RMSE {flux_rmse}");
}
