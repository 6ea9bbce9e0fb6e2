"""Non-activating windows of a latent: random, top windows of decoder neighbours, or similar in meaning.

A sampler returns up to `n` windows (sequence, start) where the latent is zero on every token, no two
sharing a token and none sharing a token with the windows it is told to avoid, best first; the builder
cuts them out. The builder draws the explainer's negatives and the scoring negatives in two separate
draws, each from its own seeded stream (and, for `similar`, its own pool), so what the explainer sees
does not depend on how many scoring negatives are asked.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Protocol

import numpy as np

from autointerp.cache import CacheReader, LatentActivations
from autointerp.config import ExamplesConfig
from autointerp.errors import ConfigError
from autointerp.examples.sampling import top_indices
from autointerp.examples.windows import Example, TokenDisjoint, Windows

EmbedFn = Callable[[list[str]], np.ndarray]
"""Texts -> embeddings [n, d]."""
DecodeFn = Callable[[np.ndarray], str]
"""Token ids -> text."""
Window = tuple[int, int]
"""(sequence, start) of a window."""

REJECTION_ROUNDS = 8
"""Rounds of random draws before random negatives fall back to enumerating every silent cell."""
MAX_NEIGHBOURS = 64
"""Decoder neighbours whose top windows are searched for neighbour negatives."""
SIMILAR_POOL_FACTOR = 20
"""Similar negatives are chosen from a fixed pool of this many random windows per negative needed."""


class NegativeSampler(Protocol):
    def sample(
        self,
        acts: LatentActivations,
        explain: list[Example],
        n: int,
        rng: np.random.Generator,
        avoid: TokenDisjoint,
    ) -> list[Window]:
        """Up to `n` windows (sequence, start) where the latent of `acts` is zero, best first, each
        accepted by `avoid` (which then holds them too, so no two share a token)."""
        ...


def negative_samplers(
    cfg: ExamplesConfig,
    windows: Windows,
    reader: CacheReader,
    pool_rngs: tuple[np.random.Generator, np.random.Generator],
    decoder: np.ndarray | None,
    embed: EmbedFn | None,
    decode: DecodeFn | None,
) -> tuple[NegativeSampler, NegativeSampler]:
    """The samplers for `cfg.negatives` of the explainer's negatives and of the scoring negatives.

    Only `similar` keeps state (a pool of windows); it gets one pool per use, each from its own generator of
    `pool_rngs` and sized from its own count, so the explainer's pool never depends on `n_negative`. Random
    scoring negatives are placed like the held-out activating windows (`test_windows`); the explainer's are
    grid cells whatever the test keys say.
    """
    if cfg.negatives == "random":
        return RandomNegatives(windows), RandomNegatives(windows, cfg.test_windows == "random")
    if cfg.negatives == "neighbours":
        if decoder is None:
            raise ConfigError(
                "examples.negatives", "neighbours needs decoder directions of the sparse coder; none given"
            )
        neighbours = NeighbourNegatives(windows, reader, decoder, cfg.center)
        return neighbours, neighbours
    if embed is None or decode is None:
        raise ConfigError(
            "examples.negatives", "similar needs an embedding model and a tokenizer to decode windows"
        )
    explain_pool = SIMILAR_POOL_FACTOR * max(cfg.n_explain_negative, 1)
    return (
        SimilarNegatives(windows, embed, decode, explain_pool, pool_rngs[0]),
        SimilarNegatives(windows, embed, decode, SIMILAR_POOL_FACTOR * cfg.n_negative, pool_rngs[1]),
    )


class RandomNegatives:
    """Windows where the latent is silent, uniformly without replacement from the whole cache: grid cells,
    or (`random_offset`) placed the way held-out activating windows are, a uniformly random token at a
    uniformly random position of the window, so that where an excerpt sits in its sequence (at a BOS, at
    the end) is no tell."""

    def __init__(self, windows: Windows, random_offset: bool = False):
        self.windows = windows
        self.random_offset = random_offset

    def sample(
        self,
        acts: LatentActivations,
        explain: list[Example],
        n: int,
        rng: np.random.Generator,
        avoid: TokenDisjoint,
    ) -> list[Window]:
        found = _Found(self.windows, n, avoid)
        for _ in range(REJECTION_ROUNDS):
            if found.full:
                break
            size = 2 * (n - len(found.windows)) + 16
            if self.random_offset:
                sequence, start = self._random_windows(size, rng)
            else:
                sequence, start = self.windows.disjoint_cell(
                    rng.integers(self.windows.disjoint_cells, size=size)
                )
            silent = self.windows.is_silent(acts, sequence, start)
            found.offer(sequence[silent], start[silent])
        if not found.full:  # a dense latent: every silent grid cell, in random order
            cells = rng.permutation(self.windows.disjoint_cells)
            sequence, start = self.windows.disjoint_cell(cells)
            silent = self.windows.is_silent(acts, sequence, start)
            found.offer(sequence[silent], start[silent])
        return found.windows

    def _random_windows(self, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        w = self.windows
        sequence, position = np.divmod(rng.integers(w.num_sequences * w.ctx_len, size=size), w.ctx_len)
        start = np.clip(position - rng.integers(0, w.width, size=size), 0, w.ctx_len - w.width)
        return sequence, start


class _Found:
    """Windows accepted so far (each once, as `avoid` allows), up to `n`."""

    def __init__(self, windows: Windows, n: int, avoid: TokenDisjoint):
        self.ctx_len, self.n, self.avoid = windows.ctx_len, n, avoid
        self.windows: list[Window] = []

    @property
    def full(self) -> bool:
        return len(self.windows) >= self.n

    def offer(self, sequence: np.ndarray, start: np.ndarray) -> None:
        for s, a in zip(sequence.tolist(), start.tolist(), strict=True):
            if self.full:
                return
            if self.avoid.add(s * self.ctx_len + a):
                self.windows.append((s, a))


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
        norms = np.maximum(np.linalg.norm(decoder, axis=1, keepdims=True), 1e-12)
        # one copy of a float32 decoder, not two (each is 2 GB at 131k latents x 4096)
        self.directions = (decoder / norms).astype(np.float32, copy=False)

    def neighbours(self, latent: int) -> np.ndarray:
        """Other latents by decreasing cosine similarity of decoder direction, the first MAX_NEIGHBOURS."""
        similarity = self.directions @ self.directions[latent]
        similarity[latent] = -np.inf
        return top_indices(similarity, MAX_NEIGHBOURS)

    def sample(
        self,
        acts: LatentActivations,
        explain: list[Example],
        n: int,
        rng: np.random.Generator,
        avoid: TokenDisjoint,
    ) -> list[Window]:
        chosen: list[Window] = []
        if n == 0:
            return []
        for other in self.neighbours(acts.latent):
            for sequence, start in self._silent_top_windows(acts, int(other)):
                if avoid.add(int(sequence) * self.windows.ctx_len + int(start)):
                    chosen.append((int(sequence), int(start)))
                    if len(chosen) == n:
                        return chosen
        return chosen

    def _silent_top_windows(self, acts: LatentActivations, other: int) -> zip:
        """(sequence, start) of the windows of `other` by decreasing activation, where `acts` is silent."""
        candidates = self.windows.candidates(self.reader.latent(other), self.center)
        order = top_indices(candidates.max_activation, len(candidates))
        sequences, starts = candidates.sequence[order], candidates.start[order]
        silent = self.windows.is_silent(acts, sequences, starts)
        return zip(sequences[silent], starts[silent], strict=True)


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
        self,
        acts: LatentActivations,
        explain: list[Example],
        n: int,
        rng: np.random.Generator,
        avoid: TokenDisjoint,
    ) -> list[Window]:
        if n == 0 or not explain:
            return []
        sequences, starts, embeddings = self.pool
        target = self._unit_embeddings([e.tokens for e in explain]).mean(axis=0)
        score = embeddings @ (target / max(float(np.linalg.norm(target)), 1e-12))
        score[~self.windows.is_silent(acts, sequences, starts)] = -np.inf
        best: list[int] = []
        for i in top_indices(score, len(score)):
            if len(best) == n or not np.isfinite(score[i]):
                break
            if avoid.add(int(sequences[i]) * self.windows.ctx_len + int(starts[i])):
                best.append(int(i))
        return [(int(sequences[i]), int(starts[i])) for i in best]

    def _unit_embeddings(self, tokens: list[np.ndarray]) -> np.ndarray:
        vectors = np.asarray(self.embed([self.decode(t) for t in tokens]), dtype=np.float32)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
