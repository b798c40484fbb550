//! Models declared with `lux_model!`: each must build the same graph as the builder
//! calls written by hand, and its typed accessors must return the right views.

use lux::dsl::ndarray::{Array1, Array2, ArrayD, IxDyn, arr0};
use lux::dsl::{Expr, GraphError, Model, Params, Prior};
use lux::lux_model;

lux_model! {
    /// Lux: labels and spectra, both linear in one latent vector per star.
    #[derive(Debug, Clone)]
    pub model Lux(latents: K, labels: L, pixels: P) {
        latent z: [K] ~ Normal(0.0, 1.0);
        /// Label coefficients.
        param A: [L, K] ~ Normal(0.0, 1.0);
        param B: [P, K] ~ Normal(0.0, 1.0);
        param s: [P] ~ HalfNormal(1.0);
        observe label: [L] ~ Normal(A * z, err);
        observe flux: [P] ~ Normal(B * z, hypot(err, s));
    }

    /// Labels from the first two latents, flux from the rest.
    #[derive(Debug)]
    model Split(latents: K, labels: L, pixels: P) {
        latent z: [K] ~ Normal(0.0, 1.0);
        param A: [L, 2] ~ Normal(0.0, 1.0);
        param B: [P, _] ~ Normal(0.0, 1.0);
        let head: [2] = z[0..2];
        observe label: [L] ~ Normal(A * head, err);
        observe flux: [P] ~ Normal(B * z[2..K], err);
    }

    /// Two latents stacked, an affine map and one scatter for the whole output.
    model Stacked(latents: K, pixels: P) {
        latent z: [K] ~ Normal(0.0, 1.0);
        latent w: [2] ~ Flat;
        param C: [P, _] ~ Normal(0.0, 2.0);
        param c: [P] ~ Normal(1.0, 0.5);
        param t: [] ~ HalfNormal(0.5);
        let features = concat(z, w);
        observe flux: [P] ~ Normal(C * features + c, hypot(err, t));
    }
}

lux_model! {
    /// The Cannon: labels are the latents, and flux is quadratic in them.
    pub model Cannon(labels: L, pixels: P) {
        latent y: [L] ~ Flat;
        param theta: [P, _] ~ Normal(0.0, 10.0);
        param s: [P] ~ HalfNormal(0.1);
        observe label: [L] ~ Normal(y, err);
        observe flux: [P] ~ Normal(theta * poly(y, 2), hypot(err, s));
    }
}

/// Builds the graph of `Lux` with builder calls written by hand.
fn lux_by_hand(k: usize, l: usize, p: usize) -> Result<Model, GraphError> {
    let mut b = Model::builder();
    let z = b.latent("z", k, Prior::normal(0.0, 1.0))?;
    let a = b.param("A", &[l, k], Prior::normal(0.0, 1.0))?;
    let bb = b.param("B", &[p, k], Prior::normal(0.0, 1.0))?;
    let s = b.param("s", &[p], Prior::half_normal(1.0))?;
    let label = b.linear(a, z)?;
    let flux = b.linear(bb, z)?;
    b.observe("label", label, None)?;
    b.observe("flux", flux, Some(s))?;
    b.build()
}

/// Latents with the value 100·n + k in row n, column k.
fn numbered_latents(n: usize, k: usize) -> Array2<f64> {
    Array2::from_shape_fn((n, k), |(row, col)| (100 * row + col) as f64)
}

fn matrix(rows: usize, cols: usize, offset: f64) -> Array2<f64> {
    Array2::from_shape_fn((rows, cols), |(r, c)| offset + (10 * r + c) as f64)
}

fn shapes(model: &Model) -> Vec<(String, Vec<usize>)> {
    model
        .params()
        .iter()
        .map(|p| (p.name.clone(), p.shape.clone()))
        .collect()
}

fn means(model: &Model) -> Vec<(String, usize, String)> {
    model
        .observes()
        .iter()
        .map(|o| (o.name.clone(), o.size, model.describe(o.mean)))
        .collect()
}

fn takes_model(model: &Model) -> usize {
    model.latent_size()
}

fn takes_as_ref(model: impl AsRef<Model>) -> usize {
    model.as_ref().observes().len()
}

#[test]
fn lux_matches_builder() -> Result<(), GraphError> {
    let lux = Lux::new(8, 2, 128)?;
    assert_eq!(*lux, lux_by_hand(8, 2, 128)?);
    assert_eq!((lux.K(), lux.L(), lux.P()), (8, 2, 128));
    assert_eq!(
        means(&lux),
        [
            ("label".into(), 2, "A * z".into()),
            ("flux".into(), 128, "B * z".into())
        ]
    );
    assert_eq!(lux.observe("flux").unwrap().scatter, lux.param_id("s"));
    assert_eq!(takes_model(&lux), 8);
    assert_eq!(takes_as_ref(lux.clone()), 2);
    Ok(())
}

#[test]
fn lux_accessors_view_params() -> Result<(), GraphError> {
    let lux = Lux::new(8, 2, 128)?;
    let a = matrix(2, 8, 0.5);
    let b = matrix(128, 8, -3.0);
    let s = Array1::from_shape_fn(128, |p| 0.01 * p as f64);
    let params = Params::new(numbered_latents(5, 8))
        .with("A", a.clone().into_dyn())
        .with("B", b.clone().into_dyn())
        .with("s", s.clone().into_dyn());

    assert_eq!(lux.A(&params), a);
    assert_eq!(lux.B(&params), b);
    assert_eq!(lux.s(&params), s);
    assert_eq!(lux.z(&params), numbered_latents(5, 8));
    lux.check_params(&params).unwrap();
    Ok(())
}

#[test]
#[should_panic(expected = "parameter `A` is missing from `params` or is not a matrix")]
fn lux_accessor_missing_param() {
    let lux = Lux::new(4, 2, 16).unwrap();
    let params = Params::new(numbered_latents(3, 4)).with("A", ArrayD::zeros(IxDyn(&[8])));
    lux.A(&params);
}

#[test]
fn split_slices_by_dimension() -> Result<(), GraphError> {
    let split = Split::new(6, 2, 50)?;
    assert_eq!(
        shapes(&split),
        [("A".into(), vec![2, 2]), ("B".into(), vec![50, 4])]
    );
    assert_eq!(
        means(&split),
        [
            ("label".into(), 2, "A * z[0..2]".into()),
            ("flux".into(), 50, "B * z[2..6]".into())
        ]
    );

    let mut b = Model::builder();
    let z = b.latent("z", 6, Prior::normal(0.0, 1.0))?;
    let a = b.param("A", &[2, 2], Prior::normal(0.0, 1.0))?;
    let head = b.slice(z, 0, 2)?;
    let label = b.linear(a, head)?;
    b.observe("label", label, None)?;
    let tail = b.slice(z, 2, 6)?;
    let bb = b.param("B", &[50, 4], Prior::normal(0.0, 1.0))?;
    let flux = b.linear(bb, tail)?;
    b.observe("flux", flux, None)?;
    assert_eq!(*split, b.build()?);
    Ok(())
}

#[test]
fn split_slice_beyond_latent_size() {
    // z[0..2] with K = 1: the end passes the latent.
    let error = Split::new(1, 2, 50).unwrap_err();
    assert_eq!(
        error,
        GraphError::SliceOutOfRange {
            context: "z".into(),
            start: 0,
            end: 2,
            size: 1
        }
    );

    // z[2..K] with K = 2 is empty.
    let error = Split::new(2, 2, 50).unwrap_err();
    assert!(
        matches!(
            error,
            GraphError::SliceOutOfRange {
                start: 2,
                end: 2,
                size: 2,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn zero_size_is_a_graph_error() {
    assert_eq!(
        Lux::new(8, 0, 128).unwrap_err(),
        GraphError::ZeroSize { name: "A".into() }
    );
}

#[test]
fn stacked_concat_and_affine() -> Result<(), GraphError> {
    let stacked = Stacked::new(3, 20)?;
    // `C` has a `_`, so it is declared at its use, after `c` and `t`.
    assert_eq!(
        shapes(&stacked),
        [
            ("c".into(), vec![20]),
            ("t".into(), vec![]),
            ("C".into(), vec![20, 5])
        ]
    );
    assert_eq!(
        means(&stacked),
        [("flux".into(), 20, "C * concat(z, w) + c".into())]
    );
    let flux = stacked.observe("flux").unwrap();
    let Expr::AddBias { input, .. } = stacked.expr(flux.mean) else {
        panic!(
            "the mean of flux is not a bias add: {:?}",
            stacked.expr(flux.mean)
        );
    };
    assert!(matches!(stacked.expr(*input), Expr::Linear { .. }));

    let mut b = Model::builder();
    let z = b.latent("z", 3, Prior::normal(0.0, 1.0))?;
    let w = b.latent("w", 2, Prior::Flat)?;
    let c = b.param("c", &[20], Prior::normal(1.0, 0.5))?;
    let t = b.param("t", &[], Prior::half_normal(0.5))?;
    let features = b.concat(&[z, w])?;
    let cc = b.param("C", &[20, 5], Prior::normal(0.0, 2.0))?;
    let mean = b.affine(cc, features, c)?;
    b.observe("flux", mean, Some(t))?;
    assert_eq!(*stacked, b.build()?);
    Ok(())
}

#[test]
fn stacked_accessors_pick_columns() -> Result<(), GraphError> {
    let stacked = Stacked::new(3, 20)?;
    let params = Params::new(numbered_latents(4, 5))
        .with("C", matrix(20, 5, 0.0).into_dyn())
        .with("c", Array1::zeros(20).into_dyn())
        .with("t", arr0(0.25).into_dyn());

    let z = stacked.z(&params);
    let w = stacked.w(&params);
    assert_eq!(z.dim(), (4, 3));
    assert_eq!(w.dim(), (4, 2));
    assert_eq!(w[[2, 0]], 203.0);
    assert_eq!(w[[3, 1]], 304.0);
    assert_eq!(z[[1, 2]], 102.0);
    assert_eq!(stacked.t(&params), 0.25);
    assert_eq!(stacked.C(&params)[[19, 4]], 194.0);
    Ok(())
}

#[test]
fn cannon_quadratic_features() -> Result<(), GraphError> {
    let cannon = Cannon::new(3, 50)?;
    assert_eq!((cannon.L(), cannon.P()), (3, 50));
    // 1 + 3 + 6 monomials of degree ≤ 2 in 3 labels.
    assert_eq!(
        shapes(&cannon),
        [("s".into(), vec![50]), ("theta".into(), vec![50, 10])]
    );
    assert_eq!(
        means(&cannon),
        [
            ("label".into(), 3, "y".into()),
            ("flux".into(), 50, "theta * poly(y, 2)".into())
        ]
    );
    assert_eq!(cannon.latents()[0].prior, Prior::Flat);
    assert_eq!(
        cannon.param(cannon.param_id("s").unwrap()).prior,
        Prior::half_normal(0.1)
    );

    let mut b = Model::builder();
    let y = b.latent("y", 3, Prior::Flat)?;
    let s = b.param("s", &[50], Prior::half_normal(0.1))?;
    b.observe("label", y, None)?;
    let features = b.poly(y, 2)?;
    let theta = b.param("theta", &[50, 10], Prior::normal(0.0, 10.0))?;
    let flux = b.linear(theta, features)?;
    b.observe("flux", flux, Some(s))?;
    assert_eq!(*cannon, b.build()?);
    Ok(())
}

#[test]
fn cannon_theta_view() -> Result<(), GraphError> {
    let cannon = Cannon::new(2, 7)?;
    let theta = matrix(7, 6, 1.0);
    let params = Params::new(numbered_latents(3, 2))
        .with("theta", theta.clone().into_dyn())
        .with("s", Array1::ones(7).into_dyn());
    assert_eq!(cannon.theta(&params), theta);
    assert_eq!(cannon.y(&params), numbered_latents(3, 2));
    Ok(())
}
