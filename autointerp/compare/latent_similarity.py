"""How similar two coders are, without explanations: the similarity of their matched latents.

The mean similarity of matched pairs (decoder cosine or activation correlation) is compared with the same
matching against a null coder: random Gaussian decoder directions of the second coder's shape, or the
second coder's activations shifted along the tokens. An optimal matching picks the best of many
candidates, so even unrelated coders have a positive mean; the null measures that chance level.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import scipy.sparse as sp

from autointerp.compare.matching import IDENTITY, Matching
from autointerp.score.metrics import aggregate

_NULL_SALT = 0x6E756C6C
NULL_DESCRIPTIONS = {
    "decoder cosine": "the same matching against random Gaussian decoder directions",
    "activation correlation": "the same matching against the second run's activations shifted along tokens",
    IDENTITY: "none (one coder)",
}


@dataclass(frozen=True)
class LatentSimilarity:
    """The similarity of every matched pair, and of every pair of the null matching (empty: no null)."""

    method: str
    values: np.ndarray
    baseline: np.ndarray

    @cached_property
    def summary(self) -> dict[str, Any]:
        return aggregate(self.values)

    @cached_property
    def baseline_summary(self) -> dict[str, Any]:
        return aggregate(self.baseline)

    def describe_baseline(self) -> str:
        return NULL_DESCRIPTIONS[self.method]

    @staticmethod
    def of(matching: Matching, null: Matching | None) -> LatentSimilarity:
        baseline = null.similarity if null is not None else np.zeros(0)
        return LatentSimilarity(matching.method, matching.similarity, baseline)


def random_decoder(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Gaussian directions [num_latents, d]: a coder unrelated to any other (its stream is salted, so it never
    equals a matrix drawn with the bare seed)."""
    return np.random.default_rng([seed, _NULL_SALT]).standard_normal(shape, dtype=np.float32)


def shifted_activations(acts: sp.csr_array, ctx_len: int) -> sp.csr_array:
    """Activations [latents, tokens] rolled by half the sequences plus half a sequence.

    Each latent keeps its own activations, but they fall on other tokens at other positions, so the
    coder no longer lines up with any coder of the same tokens (position-only latents included).
    """
    num_tokens = acts.shape[1]
    shift = ((num_tokens // ctx_len) // 2 * ctx_len + ctx_len // 2) % max(num_tokens, 1)
    rolled = sp.csr_array(
        (acts.data.copy(), (acts.indices.astype(np.int64) + shift) % num_tokens, acts.indptr.copy()),
        shape=acts.shape,
    )
    rolled.sort_indices()
    return rolled
