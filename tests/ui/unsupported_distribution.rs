use lux::lux_model;

lux_model! {
    model Lux(latents: K, pixels: P) {
        latent z: [K] ~ Cauchy(0.0, 1.0);
        param B: [P, K] ~ normal(0.0, 1.0);
        observe flux: [P] ~ StudentT(B * z, err);
    }
}

fn main() {}
