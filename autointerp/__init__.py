"""autointerp: explain and score sparse autoencoder latents with LLMs."""

__version__ = "0.1.0"
