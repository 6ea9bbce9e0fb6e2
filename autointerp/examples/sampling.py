"""Which activating windows the explainer sees and which are held out for scoring.

Draws are without replacement and return `(candidate index, quantile bin or None)` pairs.
"""

from __future__ import annotations

import numpy as np

from autointerp.config import ExamplesConfig

Draw = tuple[int, int | None]


def equal_count_bins(values: np.ndarray, n_bins: int) -> list[np.ndarray]:
    """Indices into `values` split into `n_bins` bins of equal count (within one), lowest values first."""
    return np.array_split(np.argsort(values, kind="stable"), n_bins)


def draw_from_bins(rng: np.random.Generator, bins: list[np.ndarray], n: int) -> list[Draw]:
    """`n` items spread evenly over the bins; the highest bins take the remainder.

    A bin short of its share gives what it has, and the shortfall is taken from the other bins in turn,
    highest first, so the result has min(n, total) items.
    """
    shuffled = [rng.choice(b, size=min(len(b), n), replace=False) for b in bins]
    sizes = np.array([len(b) for b in shuffled])
    quota = np.full(len(bins), n // len(bins))
    quota[len(bins) - n % len(bins) :] += 1
    taken = np.minimum(quota, sizes)
    shortfall = min(n, int(sizes.sum())) - int(taken.sum())
    while shortfall > 0:
        for b in reversed(range(len(bins))):
            if shortfall and taken[b] < sizes[b]:
                taken[b] += 1
                shortfall -= 1
    return [(int(i), q) for q, b in enumerate(shuffled) for i in b[: taken[q]]]


def top_indices(values: np.ndarray, n: int) -> np.ndarray:
    """Indices of the `n` highest values; ties go to the earlier index."""
    return np.argsort(-values, kind="stable")[:n]


def sample_explain(values: np.ndarray, cfg: ExamplesConfig, rng: np.random.Generator) -> list[Draw]:
    """The explainer's candidates by `cfg.explain_sampling`, given each candidate's max activation."""
    n = min(cfg.n_explain, len(values))
    if cfg.explain_sampling == "quantiles":
        return draw_from_bins(rng, equal_count_bins(values, cfg.n_quantiles), n)
    if cfg.explain_sampling == "random":
        return [(int(i), None) for i in rng.choice(len(values), size=n, replace=False)]
    if cfg.explain_sampling == "top":
        return [(int(i), None) for i in top_indices(values, n)]
    top = top_indices(values, n // 2)
    rest = np.setdiff1d(np.arange(len(values)), top)
    bins = [rest[b] for b in equal_count_bins(values[rest], cfg.n_quantiles)]
    return [(int(i), None) for i in top] + draw_from_bins(rng, bins, n - len(top))


def sample_test(
    values: np.ndarray, blocked: np.ndarray, cfg: ExamplesConfig, rng: np.random.Generator
) -> list[Draw]:
    """`cfg.n_test` candidates outside `blocked`, evenly from equal-count bins of those left."""
    rest = np.flatnonzero(~blocked)
    bins = [rest[b] for b in equal_count_bins(values[rest], cfg.n_quantiles)]
    return draw_from_bins(rng, bins, min(cfg.n_test, len(rest)))
