"""Non-activating windows of a latent: random, top windows of decoder neighbours, or similar in meaning.

A sampler returns up to `n` windows where the latent is zero on every token, no two sharing a token,
best first; the builder shows the first ones to the explainer and keeps the rest for scoring.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from functools import cached_property
from typing import Protocol

import numpy as np

from autointerp.cache import CacheReader, LatentActivations
from autointerp.config import ExamplesConfig
from autointerp.errors import ConfigError
from autointerp.examples.sampling import top_indices
from autointerp.examples.windows import Example, Windows

EmbedFn = Callable[[list[str]], np.ndarray]
"""Texts -> embeddings [n, d]."""
DecodeFn = Callable[[np.ndarray], str]
"""Token ids -> text."""

REJECTION_ROUNDS = 8
"""Rounds of random draws before random negatives fall back to enumerating every silent cell."""
MAX_NEIGHBOURS = 64
"""Decoder neighbours whose top windows are searched for neighbour negatives."""
SIMILAR_POOL_FACTOR = 20
"""Similar negatives are chosen from a fixed pool of this many random windows per negative needed."""


class NegativeSampler(Protocol):
    def sample(
        self, acts: LatentActivations, explain: list[Example], n: int, rng: np.random.Generator
    ) -> list[Example]:
        """Up to `n` token-disjoint windows where the latent of `acts` is zero, best first."""
        ...


def negative_sampler(
    cfg: ExamplesConfig,
    windows: Windows,
    reader: CacheReader,
    pool_rng: np.random.Generator,
    decoder: np.ndarray | None,
    embed: EmbedFn | None,
    decode: DecodeFn | None,
) -> NegativeSampler:
    """The sampler for `cfg.negatives`, checking that it has what it needs."""
    if cfg.negatives == "random":
        return RandomNegatives(windows)
    if cfg.negatives == "neighbours":
        if decoder is None:
            raise ConfigError(
                "examples.negatives", "neighbours needs decoder directions of the sparse coder; none given"
            )
        return NeighbourNegatives(windows, reader, decoder, cfg.center)
    if embed is None or decode is None:
        raise ConfigError(
            "examples.negatives", "similar needs an embedding model and a tokenizer to decode windows"
        )
    pool_size = SIMILAR_POOL_FACTOR * (cfg.n_negative + cfg.n_explain_negative)
    return SimilarNegatives(windows, embed, decode, pool_size, pool_rng)


class RandomNegatives:
    """Grid cells where the latent is silent, uniformly without replacement from the whole cache."""

    def __init__(self, windows: Windows):
        self.windows = windows

    def sample(
        self, acts: LatentActivations, explain: list[Example], n: int, rng: np.random.Generator
    ) -> list[Example]:
        sequences, starts = self.windows.disjoint_cell(random_silent_cells(self.windows, acts, n, rng))
        return [self.windows.example(acts, s, a) for s, a in zip(sequences, starts, strict=True)]


def random_silent_cells(
    windows: Windows, acts: LatentActivations, n: int, rng: np.random.Generator
) -> np.ndarray:
    """Up to `n` distinct disjoint cells where the latent is silent, in a uniformly random order.

    Rejection sampling on random cells; a latent too dense for it falls back to enumerating all cells.
    """
    found = np.zeros(0, dtype=np.int64)
    for _ in range(REJECTION_ROUNDS):
        if len(found) >= n:
            return found[:n]
        draw = rng.integers(windows.disjoint_cells, size=2 * (n - len(found)) + 16)
        draw = draw[windows.is_silent(acts, *windows.disjoint_cell(draw))]
        found = _unique_in_order(np.concatenate([found, draw]))
    if len(found) >= n:
        return found[:n]
    rest = np.arange(windows.disjoint_cells)
    rest = np.setdiff1d(rest[windows.is_silent(acts, *windows.disjoint_cell(rest))], found)
    return np.concatenate([found, rng.choice(rest, size=min(n - len(found), len(rest)), replace=False)])


def _unique_in_order(values: np.ndarray) -> np.ndarray:
    _, first = np.unique(values, return_index=True)
    return values[np.sort(first)]


class NeighbourNegatives:
    """Top-activating windows of the latents whose decoder directions are closest to this latent's."""

    def __init__(self, windows: Windows, reader: CacheReader, decoder: np.ndarray, center: bool):
        if decoder.shape[0] != reader.num_latents:
            raise ConfigError(
                "examples.negatives",
                f"the decoder has {decoder.shape[0]} rows but the cache has {reader.num_latents} latents",
            )
        self.windows = windows
        self.reader = reader
        self.center = center
        norms = np.linalg.norm(decoder, axis=1, keepdims=True)
        self.directions = (decoder / np.maximum(norms, 1e-12)).astype(np.float32)

    def neighbours(self, latent: int) -> np.ndarray:
        """Other latents by decreasing cosine similarity of decoder direction, the first MAX_NEIGHBOURS."""
        similarity = self.directions @ self.directions[latent]
        similarity[latent] = -np.inf
        return top_indices(similarity, MAX_NEIGHBOURS)

    def sample(
        self, acts: LatentActivations, explain: list[Example], n: int, rng: np.random.Generator
    ) -> list[Example]:
        accepted = _TokenDisjoint(self.windows.width)
        chosen: list[tuple[int, int]] = []
        for other in self.neighbours(acts.latent):
            for sequence, start in self._silent_top_windows(acts, int(other)):
                if accepted.add(int(sequence) * self.windows.ctx_len + int(start)):
                    chosen.append((sequence, start))
                    if len(chosen) == n:
                        return [self.windows.example(acts, s, a) for s, a in chosen]
        return [self.windows.example(acts, s, a) for s, a in chosen]

    def _silent_top_windows(self, acts: LatentActivations, other: int) -> zip:
        """(sequence, start) of the windows of `other` by decreasing activation, where `acts` is silent."""
        candidates = self.windows.candidates(self.reader.latent(other), self.center)
        order = top_indices(candidates.max_activation, len(candidates))
        sequences, starts = candidates.sequence[order], candidates.start[order]
        silent = self.windows.is_silent(acts, sequences, starts)
        return zip(sequences[silent], starts[silent], strict=True)


class _TokenDisjoint:
    """Accepts windows, given by their global first token, that share no token with those accepted."""

    def __init__(self, width: int):
        self.width = width
        self.firsts: list[int] = []

    def add(self, first: int) -> bool:
        i = bisect.bisect_left(self.firsts, first)
        if i < len(self.firsts) and self.firsts[i] - first < self.width:
            return False
        if i and first - self.firsts[i - 1] < self.width:
            return False
        self.firsts.insert(i, first)
        return True


class SimilarNegatives:
    """Windows of a fixed random pool nearest (cosine) to the mean embedding of the explainer's windows."""

    def __init__(
        self, windows: Windows, embed: EmbedFn, decode: DecodeFn, pool_size: int, rng: np.random.Generator
    ):
        self.windows = windows
        self.embed = embed
        self.decode = decode
        self.pool_size = pool_size
        self.rng = rng

    @cached_property
    def pool(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sequences, starts, unit embeddings) of the pool, computed once for all latents."""
        size = min(self.pool_size, self.windows.disjoint_cells)
        cells = np.sort(self.rng.choice(self.windows.disjoint_cells, size=size, replace=False))
        sequences, starts = self.windows.disjoint_cell(cells)
        width = self.windows.width
        tokens = [self.windows.tokens[s, a : a + width] for s, a in zip(sequences, starts, strict=True)]
        return sequences, starts, self._unit_embeddings(tokens)

    def sample(
        self, acts: LatentActivations, explain: list[Example], n: int, rng: np.random.Generator
    ) -> list[Example]:
        sequences, starts, embeddings = self.pool
        target = self._unit_embeddings([e.tokens for e in explain]).mean(axis=0)
        score = embeddings @ (target / max(float(np.linalg.norm(target)), 1e-12))
        score[~self.windows.is_silent(acts, sequences, starts)] = -np.inf
        best = [i for i in top_indices(score, n) if np.isfinite(score[i])]
        return [self.windows.example(acts, sequences[i], starts[i]) for i in best]

    def _unit_embeddings(self, tokens: list[np.ndarray]) -> np.ndarray:
        vectors = np.asarray(self.embed([self.decode(t) for t in tokens]), dtype=np.float32)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
