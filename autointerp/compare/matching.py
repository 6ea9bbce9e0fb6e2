"""One-to-one latent matching between two coders, from top-k candidate lists and sparse assignment.

Similarities are computed a block of rows at a time and only each latent's top-k candidates are kept,
so no dense latents x latents matrix is ever held; the assignment runs on the sparse candidate graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import min_weight_full_bipartite_matching

DEFAULT_CANDIDATES = 32
"""Candidates kept per latent of the first coder."""
BLOCK_ELEMENTS = 1 << 24
"""Similarities held in memory at once (rows of a block x latents of the second coder)."""
MAX_BLOCK_ROWS = 4096
IDENTITY = "same coder"
"""Method of the matching of two runs that share one cache: each latent with itself."""

ScoreBlock = Callable[[int, int], np.ndarray]
"""Similarities of first-coder latents `start:end` to every second-coder latent, [end - start, n_b]."""


@dataclass(frozen=True)
class Matching:
    """Matched latent pairs `a[i]` <-> `b[i]` and the similarity that matched them."""

    a: np.ndarray
    b: np.ndarray
    similarity: np.ndarray
    method: str
    """"decoder cosine", "activation correlation" or IDENTITY."""
    candidates: int
    """Candidates per latent the assignment chose among (all latents when it equals the width of b)."""
    num_a: int
    num_b: int

    @property
    def unmatched(self) -> int:
        """Latents of the first coder left without a partner among their candidates."""
        return self.num_a - len(self.a)

    def describe(self) -> str:
        if self.method == IDENTITY:
            return "same coder (one cache): each latent paired with itself"
        scope = "all pairs" if self.candidates >= self.num_b else f"top-{self.candidates} candidates"
        return f"{self.method}, optimal one-to-one assignment over {scope}"


def identity_matching(num_latents: int) -> Matching:
    """Each latent of a coder paired with itself (similarity 1)."""
    latents = np.arange(num_latents)
    return Matching(latents, latents, np.ones(num_latents), IDENTITY, 1, num_latents, num_latents)


def match_decoders(
    decoder_a: np.ndarray, decoder_b: np.ndarray, k: int = DEFAULT_CANDIDATES, block: int = BLOCK_ELEMENTS
) -> Matching:
    """Match by cosine similarity of decoder directions ([n_a, d] and [n_b, d])."""
    unit_a, unit_b = _unit_rows(decoder_a), _unit_rows(decoder_b)
    scores = _cosine_blocks(unit_a, unit_b)
    return _match(scores, len(unit_a), len(unit_b), "decoder cosine", k, block)


def match_activations(
    acts_a: sp.csr_array, acts_b: sp.csr_array, k: int = DEFAULT_CANDIDATES, block: int = BLOCK_ELEMENTS
) -> Matching:
    """Match by Pearson correlation of activations ([n_a, tokens] and [n_b, tokens], same tokens)."""
    scores = _correlation_blocks(acts_a, acts_b)
    return _match(scores, acts_a.shape[0], acts_b.shape[0], "activation correlation", k, block)


def top_k_candidates(
    scores: ScoreBlock, num_a: int, num_b: int, k: int, block: int = BLOCK_ELEMENTS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, columns and similarities of each first-coder latent's `k` most similar latents."""
    k = min(k, num_b)
    step = int(np.clip(block // max(num_b, 1), 1, MAX_BLOCK_ROWS))
    rows, cols, sims = [], [], []
    for start in range(0, num_a, step):
        values = scores(start, min(start + step, num_a))
        top = np.argpartition(-values, k - 1, axis=1)[:, :k] if k < num_b else np.indices(values.shape)[1]
        rows.append(np.repeat(np.arange(start, start + len(values)), k))
        cols.append(top.reshape(-1))
        sims.append(np.take_along_axis(values, top, axis=1).reshape(-1))
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(sims).astype(np.float64)


def assign(
    rows: np.ndarray, cols: np.ndarray, sims: np.ndarray, num_a: int, num_b: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The one-to-one matching over candidate edges with the most pairs, then the highest total similarity.

    Each row also gets a private dummy edge whose cost exceeds anything rearranging real edges can save,
    so a full matching always exists and rows on a dummy are the ones left unmatched.
    """
    weights = 2.0 - np.clip(sims, -1.0, 1.0)  # in [1, 3]: positive, as the solver needs
    penalty = 3.0 * (num_a + 2)
    dummy = np.arange(num_a)
    graph = sp.csr_array(
        (
            np.concatenate([weights, np.full(num_a, penalty)]),
            (np.concatenate([rows, dummy]), np.concatenate([cols, num_b + dummy])),
        ),
        shape=(num_a, num_b + num_a),
    )
    matched_rows, matched_cols = min_weight_full_bipartite_matching(graph)
    real = matched_cols < num_b
    a, b = matched_rows[real], matched_cols[real]
    return a, b, 2.0 - graph[a, b]


def _match(scores: ScoreBlock, num_a: int, num_b: int, method: str, k: int, block: int) -> Matching:
    a, b, similarity = assign(*top_k_candidates(scores, num_a, num_b, k, block), num_a, num_b)
    return Matching(a, b, similarity, method, min(k, num_b), num_a, num_b)


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(norms, 1e-12)).astype(np.float32)


def _cosine_blocks(unit_a: np.ndarray, unit_b: np.ndarray) -> ScoreBlock:
    return lambda start, end: unit_a[start:end] @ unit_b.T


def _correlation_blocks(acts_a: sp.csr_array, acts_b: sp.csr_array) -> ScoreBlock:
    if acts_a.shape[1] != acts_b.shape[1]:
        raise ValueError(f"activations over {acts_a.shape[1]} and {acts_b.shape[1]} tokens")
    num_tokens = acts_a.shape[1]
    mean_a, std_a = _moments(acts_a)
    mean_b, std_b = _moments(acts_b)
    b_by_token = acts_b.T.tocsr()

    def block(start: int, end: int) -> np.ndarray:
        cross = (acts_a[start:end] @ b_by_token).toarray().astype(np.float64) / num_tokens
        with np.errstate(divide="ignore", invalid="ignore"):
            corr = (cross - np.outer(mean_a[start:end], mean_b)) / np.outer(std_a[start:end], std_b)
        return np.nan_to_num(corr, nan=0.0, posinf=0.0, neginf=0.0)

    return block


def _moments(acts: sp.csr_array) -> tuple[np.ndarray, np.ndarray]:
    """Per-latent mean and standard deviation over all tokens (zeros included)."""
    num_tokens = acts.shape[1]
    mean = np.asarray(acts.sum(axis=1), dtype=np.float64).reshape(-1) / num_tokens
    squares = np.asarray(acts.multiply(acts).sum(axis=1), dtype=np.float64).reshape(-1) / num_tokens
    return mean, np.sqrt(np.maximum(squares - mean**2, 0.0))
