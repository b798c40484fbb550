use lux::lux_model;

lux_model! {
    pub modle Lux(latents: K, pixels: P) {
        latent z: [K] ~ Normal(0.0, 1.0);
    }
}

fn main() {}
