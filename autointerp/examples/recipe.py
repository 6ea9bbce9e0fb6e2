"""The recipe that draws a latent's two views from the cache, and which config keys shape each view.

The explain stage shows a latent's *explainer view* (activating examples and, for the contrastive explainer,
negatives) to the explainer; the score stage rebuilds the same latent's *test view* (held-out activating
examples and scoring negatives) with the same recipe and seeds. Explanations stay valid when only a
test-view key changes; scores do not.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from autointerp.cache import CacheReader
from autointerp.coders import load_file_coder
from autointerp.config import ExamplesConfig, RunConfig
from autointerp.embedding import Embedder
from autointerp.errors import ConfigError
from autointerp.examples.builder import TEST_ONLY_KEYS, ExampleBuilder
from autointerp.texts import TokenTexts

HELD_OUT_VIEW_KEYS = frozenset(key.removeprefix("examples.") for key in TEST_ONLY_KEYS)
"""`examples.*` keys that shape only the test view (the builder draws the explainer's view first, apart)."""
EXPLAINER_VIEW_KEYS = frozenset(f.name for f in dataclasses.fields(ExamplesConfig)) - HELD_OUT_VIEW_KEYS
"""Every other `examples.*` key shapes the explainer view (and, through the windows, the test view too)."""


def explainer_view_key(config: RunConfig) -> dict[str, Any]:
    """The config values that decide which examples the explainer sees for a latent of a given cache."""
    examples = config.to_dict()["examples"]
    return {
        "seed": config.seed,
        "min_activations": config.latents.min_activations,
        "examples": {name: examples[name] for name in sorted(EXPLAINER_VIEW_KEYS)},
    }


def held_out_view_key(config: RunConfig) -> dict[str, Any]:
    """The config values that, beside the explainer view, decide a latent's held-out test examples."""
    examples = config.to_dict()["examples"]
    return {"examples": {name: examples[name] for name in sorted(HELD_OUT_VIEW_KEYS)}}


def example_builder(
    config: RunConfig, hookpoint: str, reader: CacheReader, texts: TokenTexts
) -> ExampleBuilder:
    """The builder of one hookpoint's examples, with what its negatives mode needs loaded."""
    decoder = embed = None
    if config.examples.negatives == "neighbours":
        directions = load_file_coder(config.sparse_coder, hookpoint).decoder_directions()
        if directions is None:
            raise ConfigError("examples.negatives", "neighbours needs a coder with decoder directions")
        decoder = directions.float().numpy()
    if config.examples.negatives == "similar":
        embed = Embedder()
    return ExampleBuilder(
        reader,
        config.examples,
        config.latents.min_activations,
        config.seed,
        hookpoint,
        decoder=decoder,
        embed=embed,
        decode=texts.text,
    )
