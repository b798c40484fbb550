use lux::lux_model;

lux_model! {
    model Lux(latents: K, pixels: P) {
        latent z: [K] ~ Normal(0.0, 1.0);
        param B: [P, K] ~ Normal(0.0, 1.0);
        param C: [_, K] ~ Normal(0.0, 1.0);
        param D: [P, _] ~ Normal(0.0, 1.0);
        observe flux: [P] ~ Normal(B * z, err);
    }
}

fn main() {}
