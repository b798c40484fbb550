use lux::lux_model;

lux_model! {
    model Lux(latents: K, labels: L, pixels: P) {
        latent z: [K] ~ Normal(0.0, 1.0);
        latent x: [P] ~ Normal(0.0, 1.0);
        param A: [L, K] ~ Normal(0.0, 1.0);
        observe label: [L] ~ Normal(A * x, err);
        observe flux: [K] ~ Normal(z, err);
    }
}

fn main() {}
