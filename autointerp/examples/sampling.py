"""Which activating windows the explainer sees and which are held out for scoring.

Draws are without replacement and return `(candidate index, quantile bin or None)` pairs. A draw may be
given an `accept` test, called once per candidate in draw order, that refuses candidates (for example one
that shares a token with a window already drawn); refused candidates are passed over and the draw goes on.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from autointerp.config import ExamplesConfig

Draw = tuple[int, int | None]
Accept = Callable[[int], bool]


def equal_count_bins(values: np.ndarray, n_bins: int) -> list[np.ndarray]:
    """Indices into `values` split into `n_bins` bins of equal count (within one), lowest values first."""
    return np.array_split(np.argsort(values, kind="stable"), n_bins)


def _accept_all(_: int) -> bool:
    return True


def draw_from_bins(
    rng: np.random.Generator, bins: list[np.ndarray], n: int, accept: Accept = _accept_all
) -> list[Draw]:
    """`n` items spread evenly over the bins; the highest bins take the remainder.

    A bin short of its share (after `accept`) gives what it has, and the shortfall is taken from the other
    bins in turn, highest first, so the result has min(n, accepted) items.
    """
    shuffled = [iter(rng.permutation(b).tolist()) for b in bins]
    quota = np.full(len(bins), n // len(bins))
    quota[len(bins) - n % len(bins) :] += 1
    taken: list[list[int]] = [[] for _ in bins]
    open_bins = set(range(len(bins)))

    def take(q: int) -> bool:
        for i in shuffled[q]:
            if accept(i):
                taken[q].append(i)
                return True
        open_bins.discard(q)
        return False

    for q in range(len(bins)):
        while len(taken[q]) < quota[q] and take(q):
            pass
    total = sum(len(t) for t in taken)
    while total < n and open_bins:
        for q in reversed(range(len(bins))):
            if total < n and q in open_bins and take(q):
                total += 1
    return [(i, q) for q, items in enumerate(taken) for i in items]


def top_indices(values: np.ndarray, n: int) -> np.ndarray:
    """Indices of the `n` highest values; ties go to the earlier index."""
    return np.argsort(-values, kind="stable")[:n]


def _first_accepted(order: np.ndarray, n: int, accept: Accept) -> list[Draw]:
    chosen: list[Draw] = []
    for i in np.asarray(order).tolist():
        if len(chosen) == n:
            break
        if accept(i):
            chosen.append((i, None))
    return chosen


def sample_explain(
    values: np.ndarray, cfg: ExamplesConfig, rng: np.random.Generator, accept: Accept = _accept_all
) -> list[Draw]:
    """The explainer's candidates by `cfg.explain_sampling`, given each candidate's max activation."""
    n = min(cfg.n_explain, len(values))
    if cfg.explain_sampling == "quantiles":
        return draw_from_bins(rng, equal_count_bins(values, cfg.n_quantiles), n, accept)
    if cfg.explain_sampling == "random":
        return _first_accepted(rng.permutation(len(values)), n, accept)
    if cfg.explain_sampling == "top":
        return _first_accepted(top_indices(values, len(values)), n, accept)
    if cfg.explain_sampling == "top_iw":
        return top_then_weighted(values, np.arange(len(values)), min(cfg.n_top, n), n, rng, accept)
    top = _first_accepted(top_indices(values, len(values)), n // 2, accept)
    rest = np.setdiff1d(np.arange(len(values)), [i for i, _ in top])
    bins = [rest[b] for b in equal_count_bins(values[rest], cfg.n_quantiles)]
    return top + [(i, None) for i, _ in draw_from_bins(rng, bins, n - len(top), accept)]


def sample_test(
    values: np.ndarray,
    blocked: np.ndarray,
    cfg: ExamplesConfig,
    rng: np.random.Generator,
    accept: Accept = _accept_all,
) -> list[Draw]:
    """`cfg.n_test` candidates outside `blocked`: evenly from equal-count bins of those left, or (`top_iw`)
    the highest of them, then importance-weighted ones below."""
    rest = np.flatnonzero(~blocked)
    if cfg.test_sampling == "top_iw":
        n = min(cfg.n_test, len(rest))
        return top_then_weighted(values, rest, min(cfg.n_test_top, n), n, rng, accept)
    bins = [rest[b] for b in equal_count_bins(values[rest], cfg.n_quantiles)]
    return draw_from_bins(rng, bins, min(cfg.n_test, len(rest)), accept)


def top_then_weighted(
    values: np.ndarray, pool: np.ndarray, n_top: int, n: int, rng: np.random.Generator, accept: Accept
) -> list[Draw]:
    """SAEBench's draw: the `n_top` highest candidates of `pool`, then `n - n_top` importance-weighted ones
    (each next one chosen with probability proportional to its squared value) among those below the lowest
    of the top ones."""
    order = pool[np.argsort(-values[pool], kind="stable")]
    top = _first_accepted(order, n_top, accept)
    floor = min((values[i] for i, _ in top), default=np.inf)
    below = pool[(values[pool] < floor) & (values[pool] > 0)]
    weights = values[below].astype(np.float64) ** 2
    weighted = (
        rng.choice(below, size=len(below), replace=False, p=weights / weights.sum()) if len(below) else below
    )
    return top + _first_accepted(weighted, n - len(top), accept)
