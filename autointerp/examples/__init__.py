"""Stage 2 inputs: which latents to explain, and the example windows of each latent."""

from autointerp.examples.builder import ExampleBuilder, LatentExamples
from autointerp.examples.negatives import DecodeFn, EmbedFn
from autointerp.examples.selection import LatentSelection, rng_for, run_latents, select_latents
from autointerp.examples.windows import Example

__all__ = [
    "DecodeFn",
    "EmbedFn",
    "Example",
    "ExampleBuilder",
    "LatentExamples",
    "LatentSelection",
    "rng_for",
    "run_latents",
    "select_latents",
]
