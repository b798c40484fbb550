use lux::lux_model;

lux_model! {
    model Lux(latents: K, pixels: P) {
        latent z: [Q] ~ Normal(0.0, 1.0);
        param B: [P, z] ~ Normal(0.0, 1.0);
        observe flux: [P] ~ Normal(B * z[0..M], err);
    }
}

fn main() {}
