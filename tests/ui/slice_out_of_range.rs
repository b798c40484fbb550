use lux::lux_model;

lux_model! {
    model Lux(labels: L, pixels: P) {
        latent z: [4] ~ Normal(0.0, 1.0);
        param A: [L, _] ~ Normal(0.0, 1.0);
        param B: [P, 2] ~ Normal(0.0, 1.0);
        observe label: [L] ~ Normal(A * z[2..6], err);
        observe flux: [P] ~ Normal(B * z[3..3], err);
    }
}

fn main() {}
