"""Small-sample statistics of a calibration: means with bootstrap CIs, paired and unpaired differences with
a bootstrap CI and a permutation p-value (exact sign flips for up to 16 pairs)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

RESAMPLES = 10_000
EXACT_PAIRS = 16
ALPHA = 0.05


def mean_ci(values: Sequence[float] | np.ndarray, seed: int) -> dict[str, Any]:
    """Mean, percentile-bootstrap 95% CI (None below 2 values) and n."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    low = high = None
    if len(x) >= 2:
        rng = np.random.default_rng(seed)
        means = x[rng.integers(0, len(x), size=(RESAMPLES, len(x)))].mean(axis=1)
        low, high = (float(v) for v in np.quantile(means, [ALPHA / 2, 1 - ALPHA / 2]))
    return {"mean": float(x.mean()), "ci_low": low, "ci_high": high, "n": len(x)}


def paired_difference(a: Sequence[float], b: Sequence[float], seed: int) -> dict[str, Any]:
    """Mean of `a - b` over pairs with a bootstrap CI, and the one-sided sign-flip p-value of `a > b`.

    Significant when the CI lies above 0 and p < 0.05.
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    result = mean_ci(d, seed)
    result["p_value"] = _sign_flip_p(d, seed) if len(d) else None
    result["significant"] = _significant(result)
    return result


def unpaired_difference(a: Sequence[float], b: Sequence[float], seed: int) -> dict[str, Any]:
    """Mean of `a` minus mean of `b` with a bootstrap CI (each group resampled), and the one-sided
    permutation p-value of `a > b`."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(x) == 0 or len(y) == 0:
        return {
            "mean": None,
            "ci_low": None,
            "ci_high": None,
            "n": [len(x), len(y)],
            "p_value": None,
            "significant": False,
        }
    rng = np.random.default_rng(seed)
    observed = x.mean() - y.mean()
    low = high = None
    if len(x) >= 2 and len(y) >= 2:
        boot = x[rng.integers(0, len(x), size=(RESAMPLES, len(x)))].mean(1) - y[
            rng.integers(0, len(y), size=(RESAMPLES, len(y)))
        ].mean(1)
        low, high = (float(v) for v in np.quantile(boot, [ALPHA / 2, 1 - ALPHA / 2]))
    pooled = np.concatenate([x, y])
    perms = np.array([rng.permutation(pooled) for _ in range(RESAMPLES)])
    null = perms[:, : len(x)].mean(1) - perms[:, len(x) :].mean(1)
    p = float((1 + (null >= observed - 1e-12).sum()) / (RESAMPLES + 1))
    result = {"mean": float(observed), "ci_low": low, "ci_high": high, "n": [len(x), len(y)], "p_value": p}
    result["significant"] = _significant(result)
    return result


def _sign_flip_p(d: np.ndarray, seed: int) -> float:
    """P(mean of randomly signed |d| >= observed mean): exact up to 16 pairs, else Monte Carlo."""
    observed = d.mean()
    if len(d) <= EXACT_PAIRS:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
        return float(((signs * np.abs(d)).mean(1) >= observed - 1e-12).mean())
    rng = np.random.default_rng(seed)
    signs = rng.choice((1.0, -1.0), size=(RESAMPLES, len(d)))
    return float((1 + ((signs * np.abs(d)).mean(1) >= observed - 1e-12).sum()) / (RESAMPLES + 1))


def _significant(result: dict[str, Any]) -> bool:
    return bool(
        result["ci_low"] is not None
        and result["ci_low"] > 0
        and result["p_value"] is not None
        and result["p_value"] < ALPHA
    )
