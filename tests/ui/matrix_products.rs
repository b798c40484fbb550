use lux::lux_model;

lux_model! {
    model Lux(latents: K, labels: L, pixels: P) {
        latent z: [K] ~ Normal(0.0, 1.0);
        param A: [P, L] ~ Normal(0.0, 1.0);
        param B: [L, K] ~ Normal(0.0, 1.0);
        param s: [P] ~ HalfNormal(1.0);
        observe flux: [P] ~ Normal(A * B * z, err);
        observe label: [L] ~ Normal(z * B, err);
        observe scaled: [P] ~ Normal(s * z, err);
    }
}

fn main() {}
