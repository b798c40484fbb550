use lux::lux_model;

lux_model! {
    model Lux(latents: K, labels: L, pixels: P) {
        latent z: [K] ~ Normal(0.0, 1.0);
        param A: [L, K] ~ Normal(0.0, 1.0);
        param b: [P] ~ Normal(0.0, 1.0);
        observe label: [L] ~ Normal(A * z + b, err);
    }
}

fn main() {}
