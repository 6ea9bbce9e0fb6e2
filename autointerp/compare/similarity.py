"""Similarity of matched latents' explanations: embedding cosine against a random-pair baseline."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from autointerp.score.metrics import aggregate

SIMILARITY_THRESHOLDS = (0.0, 0.5, 0.8)
"""Latent-similarity floors at which explanation similarity is also reported."""
BASELINE_PAIRS = 1000
"""Random (explained latent of a, explained latent of b) pairs drawn for the baseline."""
MIN_PAIRS = 30
"""Fewer pairs explained on both sides than this: the similarity CI and the paired tests are flagged."""

Embed = Callable[[Sequence[str]], np.ndarray]
"""Texts -> unit-norm vectors [len(texts), dim], e.g. an `autointerp.embedding.Embedder`."""


@dataclass(frozen=True)
class ExplanationVectors:
    """Unit-norm embeddings of a run's explanations, rows in ascending latent order."""

    latents: np.ndarray
    vectors: np.ndarray

    @staticmethod
    def embed(explanations: dict[int, str], embed: Embed) -> ExplanationVectors:
        """Embed every explanation once."""
        latents = np.array(sorted(explanations), dtype=np.int64)
        if not len(latents):
            return ExplanationVectors(latents, np.zeros((0, 0), dtype=np.float32))
        return ExplanationVectors(latents, embed([explanations[int(latent)] for latent in latents]))

    def rows(self, latents: np.ndarray) -> np.ndarray:
        """Row of each latent, or -1 where the latent has no explanation (needs at least one row)."""
        position = np.minimum(np.searchsorted(self.latents, latents), len(self.latents) - 1)
        return np.where(self.latents[position] == latents, position, -1)


@dataclass(frozen=True)
class ExplanationSimilarity:
    """Cosine of the explanations of matched pairs explained on both sides, and of random pairs."""

    a: np.ndarray
    b: np.ndarray
    values: np.ndarray
    baseline: np.ndarray
    latent_similarity: np.ndarray | None = None
    """The matching similarity of each of these pairs (decoder cosine or activation correlation)."""

    @cached_property
    def summary(self) -> dict[str, Any]:
        return aggregate(self.values)

    @cached_property
    def by_latent_similarity(self) -> dict[str, dict[str, Any]]:
        """The explanation similarity of the pairs matched at least this closely: a matching pairs as many
        latents as it can, so weak or negative matches are in it too and would dilute the mean."""
        if self.latent_similarity is None:
            return {}
        return {
            f">= {threshold:g}": aggregate(self.values[self.latent_similarity >= threshold])
            for threshold in SIMILARITY_THRESHOLDS
        }

    @cached_property
    def baseline_summary(self) -> dict[str, Any]:
        return aggregate(self.baseline)


def explanation_similarity(
    a: np.ndarray,
    b: np.ndarray,
    vectors_a: ExplanationVectors,
    vectors_b: ExplanationVectors,
    seed: int = 0,
    latent_similarity: np.ndarray | None = None,
) -> ExplanationSimilarity:
    """Similarity of the matched pairs `a[i]` <-> `b[i]` whose latents are both explained (with each pair's
    matching similarity, when given, to report it by how closely the latents match)."""
    if not len(vectors_a.latents) or not len(vectors_b.latents):
        empty = np.zeros(0, dtype=np.int64)
        none = None if latent_similarity is None else np.zeros(0)
        return ExplanationSimilarity(empty, empty, np.zeros(0), np.zeros(0), none)
    rows_a, rows_b = vectors_a.rows(a), vectors_b.rows(b)
    both = (rows_a >= 0) & (rows_b >= 0)
    rows_a, rows_b = rows_a[both], rows_b[both]
    values = np.einsum("ij,ij->i", vectors_a.vectors[rows_a], vectors_b.vectors[rows_b])
    rng = np.random.default_rng(seed)
    random_a = rng.integers(0, len(vectors_a.latents), BASELINE_PAIRS)
    random_b = rng.integers(0, len(vectors_b.latents), BASELINE_PAIRS)
    baseline = np.einsum("ij,ij->i", vectors_a.vectors[random_a], vectors_b.vectors[random_b])
    matched = None if latent_similarity is None else np.asarray(latent_similarity, dtype=np.float64)[both]
    return ExplanationSimilarity(
        a[both], b[both], values.astype(np.float64), baseline.astype(np.float64), matched
    )
