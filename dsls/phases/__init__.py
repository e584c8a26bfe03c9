"""Phase modules: reconstruction (1), adversarial (2), latent search (3)."""
