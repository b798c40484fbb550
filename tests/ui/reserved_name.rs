use lux::lux_model;

lux_model! {
    model Lux(latents: K, pixels: P) {
        latent new: [K] ~ Normal(0.0, 1.0);
        param err: [P, K] ~ Normal(0.0, 1.0);
        observe flux: [P] ~ Normal(err * new, err);
    }
}

fn main() {}
