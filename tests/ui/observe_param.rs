use lux::lux_model;

lux_model! {
    model Lux(latents: K, pixels: P) {
        latent z: [K] ~ Normal(0.0, 1.0);
        param A: [P, K] ~ Normal(0.0, 1.0);
        observe A ~ Normal(A * z, err);
    }
}

fn main() {}
