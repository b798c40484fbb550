use lux::lux_model;

lux_model! {
    model Lux(latents: K, labels: L, pixels: P) {
        latent z: [K] ~ Normal(0.0, 1.0);
        param B: [P, K] ~ Normal(0.0, 1.0);
        observe label: [L] ~ Normal(B * z, err);
    }
}

fn main() {}
