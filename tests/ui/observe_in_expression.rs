use lux::lux_model;

lux_model! {
    model Lux(latents: K, labels: L, pixels: P) {
        latent z: [K] ~ Normal(0.0, 1.0);
        param A: [L, K] ~ Normal(0.0, 1.0);
        param B: [P, L] ~ Normal(0.0, 1.0);
        observe label: [L] ~ Normal(A * z, err);
        observe flux: [P] ~ Normal(B * label, err);
    }
}

fn main() {}
