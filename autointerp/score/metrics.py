"""Scoring metrics: per-latent classification metrics, AUROC, correlation, and aggregates across latents.

numpy only. Binary metrics follow scikit-learn's definitions and its `zero_division=0` convention, so
they can be checked against it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

_BOOTSTRAP_CHUNK = 1 << 22
"""Most resampled values held in memory at once by `bootstrap_ci`."""
MIN_PER_CLASS = 10
"""Fewest scored examples of each class a latent's binary metrics need (fewer if fewer were given, but
never none): below it balanced accuracy is not a measure of the two classes, and every metric is None."""
SMALL_SAMPLE = 20
"""Below this many values a confidence interval is Student's t interval, not the percentile bootstrap
(which undercovers for small n)."""
LARGE_SAMPLE = 100_000
"""From this many values on, the CI is the normal approximation (the bootstrap's limit, without its cost)."""


def _binary(values: np.ndarray, what: str) -> np.ndarray:
    if not np.isin(values, (0, 1)).all():
        raise ValueError(f"{what} must be 0 or 1")
    return values.astype(bool)


def binary_metrics(
    labels: Sequence[int],
    predictions: Sequence[int | None],
    probabilities: Sequence[float | None] | None = None,
    min_per_class: int = MIN_PER_CLASS,
) -> dict[str, Any]:
    """One latent's classification metrics; labels and predictions are 0 or 1.

    An example whose prediction is None failed: it is excluded from every metric and counted in
    `n_failed` (and in `n_failed_positive` / `n_failed_negative`). AUROC uses the probabilities of the
    non-failed examples that have one; it is None without probabilities or when one class is missing among
    them. Undefined precision, recall and F1 are 0 (scikit-learn's `zero_division=0`). Each class needs
    `min_per_class` scored examples (or all of that class's examples when fewer were given, and at least
    one): otherwise every metric is None and `undefined` says why, so a scorer that always answers 1 never
    gets a score from positives alone. `balanced_accuracy_interval` is its 95% interval for this latent.
    """
    if len(labels) != len(predictions) or (probabilities is not None and len(probabilities) != len(labels)):
        raise ValueError("labels, predictions and probabilities must have the same length")
    kept = [i for i, p in enumerate(predictions) if p is not None]
    y = _binary(np.asarray([labels[i] for i in kept], dtype=float), "labels")
    yhat = _binary(np.asarray([predictions[i] for i in kept], dtype=float), "predictions")
    n = len(kept)
    n_positive = int(y.sum())
    given_positive = int(np.sum(_binary(np.asarray(labels, dtype=float), "labels")))
    counts: dict[str, Any] = {
        "n_examples": n,
        "n_failed": len(predictions) - n,
        "n_positive": n_positive,
        "n_negative": n - n_positive,
        "n_failed_positive": given_positive - n_positive,
        "n_failed_negative": len(labels) - given_positive - (n - n_positive),
    }
    metrics: dict[str, Any] = dict.fromkeys(
        ("balanced_accuracy", "accuracy", "f1", "precision", "recall", "auroc")
    )
    if n == 0:
        return metrics | counts
    short = [
        f"{have} {name} scored, {need} needed"
        for name, have, given in (
            ("positives", n_positive, given_positive),
            ("negatives", n - n_positive, len(labels) - given_positive),
        )
        if have < (need := max(1, min(min_per_class, given)))
    ]
    if short:
        return metrics | counts | {"undefined": "too few examples of a class: " + "; ".join(short)}

    tp = int(np.sum(y & yhat))
    fp = int(np.sum(~y & yhat))
    fn = int(np.sum(y & ~yhat))
    tn = n - tp - fp - fn
    metrics["balanced_accuracy"] = (tp / (tp + fn) + tn / (tn + fp)) / 2
    metrics["balanced_accuracy_interval"] = balanced_accuracy_interval(tp, tp + fn, tn, tn + fp)
    metrics["accuracy"] = (tp + tn) / n
    metrics["f1"] = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    metrics["precision"] = tp / (tp + fp) if tp else 0.0
    metrics["recall"] = tp / (tp + fn) if tp else 0.0
    if probabilities is not None:
        scored = [(labels[i], probabilities[i]) for i in kept if probabilities[i] is not None]
        if scored:
            metrics["auroc"] = auroc(*zip(*scored, strict=True))
    return metrics | counts


def balanced_accuracy_interval(
    true_positive: int, positives: int, true_negative: int, negatives: int, level: float = 0.95
) -> list[float]:
    """A confidence interval of one latent's balanced accuracy: the normal approximation on each class's
    recall with one success and one failure added (Agresti-Caffo), so it is not zero-width at 0 or 1."""
    from scipy.stats import norm

    recalls = [(true_positive + 1) / (positives + 2), (true_negative + 1) / (negatives + 2)]
    variance = sum(r * (1 - r) / (n + 2) for r, n in zip(recalls, (positives, negatives), strict=True)) / 4
    centre = (true_positive / positives + true_negative / negatives) / 2
    half = float(norm.ppf((1 + level) / 2)) * float(np.sqrt(variance))
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def auroc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); None when a class is missing."""
    y = _binary(np.asarray(labels, dtype=float), "labels")
    s = np.asarray(scores, dtype=float)
    if len(y) != len(s):
        raise ValueError("labels and scores must have the same length")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    n_positive = int(y.sum())
    n_negative = len(y) - n_positive
    if n_positive == 0 or n_negative == 0:
        return None
    _, inverse, tie_counts = np.unique(s, return_inverse=True, return_counts=True)
    average_ranks = np.cumsum(tie_counts) - (tie_counts - 1) / 2
    u = average_ranks[inverse][y].sum() - n_positive * (n_positive + 1) / 2
    return float(u / (n_positive * n_negative))


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation; None when there are fewer than two points or either side is constant."""
    a = np.asarray(x, dtype=float)
    b = np.asarray(y, dtype=float)
    if len(a) != len(b):
        raise ValueError("x and y must have the same length")
    if len(a) < 2 or (a == a[0]).all() or (b == b[0]).all():
        return None
    da, db = a - a.mean(), b - b.mean()
    r = float(np.dot(da, db) / np.sqrt(np.dot(da, da) * np.dot(db, db)))
    return min(1.0, max(-1.0, r))


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, level: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float] | tuple[None, None]:
    """Confidence interval of the mean at `level`: the percentile bootstrap, or Student's t interval for
    fewer than `SMALL_SAMPLE` values, or the normal interval from `LARGE_SAMPLE` values on; (None, None)
    for a single value (no interval can be given)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    data = np.asarray(values, dtype=float)
    if len(data) == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if len(data) == 1:
        return None, None
    if len(data) < SMALL_SAMPLE:
        return t_interval(data, level)
    if len(data) >= LARGE_SAMPLE:
        return normal_interval(data, level)
    rng = np.random.default_rng(seed)
    rows = max(1, _BOOTSTRAP_CHUNK // len(data))
    means = np.concatenate(
        [
            data[rng.integers(0, len(data), size=(min(rows, n_resamples - start), len(data)))].mean(axis=1)
            for start in range(0, n_resamples, rows)
        ]
    )
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def normal_interval(data: np.ndarray, level: float) -> tuple[float, float]:
    """The normal-approximation confidence interval of the mean (what the bootstrap converges to)."""
    from scipy.stats import norm

    half = float(norm.ppf(0.5 + level / 2)) * float(data.std(ddof=1)) / float(np.sqrt(len(data)))
    mean = float(data.mean())
    return mean - half, mean + half


def t_interval(data: np.ndarray, level: float) -> tuple[float, float]:
    """Student's t confidence interval of the mean of `data` (at least two values)."""
    from scipy.stats import t

    half = float(t.ppf((1 + level) / 2, len(data) - 1)) * float(data.std(ddof=1)) / np.sqrt(len(data))
    return float(data.mean()) - half, float(data.mean()) + half


def mean_with_ci(stats: dict[str, float | int | None]) -> str:
    """`mean [ci_low, ci_high]` of an `aggregate`, with `(n = 1)` in place of an interval that cannot be
    given; `-` without values."""
    if stats.get("mean") is None:
        return "-"
    if stats.get("ci_low") is None:
        return f"{stats['mean']:.3f} (n = {stats.get('n')})"
    return f"{stats['mean']:.3f} [{stats['ci_low']:.3f}, {stats['ci_high']:.3f}]"


def aggregate(
    values: Sequence[float | None] | np.ndarray, level: float = 0.95, seed: int = 0
) -> dict[str, float | int | None]:
    """A metric across latents, None values ignored: mean with its bootstrap CI, median, std, n.

    `std` is the sample standard deviation (None for a single value); with no values all but n are None.
    """
    data = np.asarray([v for v in values if v is not None], dtype=float)
    if len(data) == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "median": None, "std": None, "n": 0}
    ci_low, ci_high = bootstrap_ci(data, level=level, seed=seed)
    return {
        "mean": float(data.mean()),
        "ci_low": ci_low,
        "ci_high": ci_high,
        "median": float(np.median(data)),
        "std": float(data.std(ddof=1)) if len(data) > 1 else None,
        "n": len(data),
    }


def chance_level(metric: str, positive_fraction: float = 0.5) -> float | None:
    """What a random guesser scores on `metric` in expectation; None for an unknown metric.

    The guesser answers 1 with probability 1/2 whatever the input (and gives uninformative scores), on
    examples of which `positive_fraction` are positive. Precision and F1 are the large-sample values
    (ratios of expected counts): precision = p, F1 = 2 * p * 0.5 / (p + 0.5). Scorers whose metrics mean
    something else (the intruder's accuracy) say so in their registry entry.
    """
    if not 0 <= positive_fraction <= 1:
        raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
    p = positive_fraction
    levels = {
        "balanced_accuracy": 0.5,
        "auroc": 0.5,
        "accuracy": 0.5,
        "recall": 0.5,
        "precision": p,
        "f1": 2 * p * 0.5 / (p + 0.5),
        "pearson": 0.0,
    }
    return levels.get(metric)


def pooled_binary_metrics(
    per_latent: Iterable[tuple[Sequence[int], Sequence[int | None], Sequence[float | None] | None]],
) -> dict[str, Any]:
    """`binary_metrics` over all latents' examples together (a latent without probabilities adds none)."""
    labels: list[int] = []
    predictions: list[int | None] = []
    probabilities: list[float | None] = []
    any_probabilities = False
    for latent_labels, latent_predictions, latent_probabilities in per_latent:
        if len(latent_labels) != len(latent_predictions) or (
            latent_probabilities is not None and len(latent_probabilities) != len(latent_labels)
        ):
            raise ValueError("labels, predictions and probabilities must have the same length")
        labels.extend(latent_labels)
        predictions.extend(latent_predictions)
        if latent_probabilities is None:
            probabilities.extend([None] * len(latent_labels))
        else:
            any_probabilities = True
            probabilities.extend(latent_probabilities)
    return binary_metrics(labels, predictions, probabilities if any_probabilities else None)
