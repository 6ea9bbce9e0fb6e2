"""Pooled metrics: a scorer's metric over every example of every scored latent at once (an extra beside
the per-latent mean, never the headline). Each function gets one list of usable examples per latent."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from autointerp.score.metrics import auroc, pearson, pooled_binary_metrics

Examples = list[list[dict[str, Any]]]


def pooled_classification(examples: Examples) -> dict[str, Any]:
    """Binary metrics over every excerpt's label, prediction and probability (detection, fuzzing)."""
    return pooled_binary_metrics(
        ([e["label"] for e in ex], [e["prediction"] for e in ex], [e["probability"] for e in ex])
        for ex in examples
    )


def pooled_auroc(examples: Examples) -> dict[str, Any]:
    """AUROC of every excerpt's value, activating vs not (embedding, surprisal)."""
    flat = [e for ex in examples for e in ex]
    return {"auroc": auroc([e["label"] for e in flat], [e["value"] for e in flat]) if flat else None}


def pooled_pearson(examples: Examples) -> dict[str, Any]:
    """Pearson r of predicted and true activations over every simulated token, each latent's activations
    divided by its largest (latents' scales differ by orders of magnitude; predictions are 0-9 anyway)."""
    true: list[float] = []
    predicted: list[float] = []
    for ex in examples:
        simulated = [e for e in ex if e.get("predicted") is not None]
        activations = _concat(e["activations"] for e in simulated)
        peak = max(activations, default=0.0)
        true += [a / peak for a in activations] if peak > 0 else activations
        predicted += _concat(e["predicted"] for e in simulated)
    return {"pearson": pearson(predicted, true) if len(true) > 1 else None}


def pooled_accuracy(examples: Examples) -> dict[str, Any]:
    """Fraction of trials answered right (intruder)."""
    hits = [e["prediction"] == e["label"] for ex in examples for e in ex]
    return {"accuracy": float(np.mean(hits)) if hits else None}


def no_pooled(examples: Examples) -> dict[str, Any]:
    """For scorers with no pooled metric."""
    return {}


def _concat(lists: Iterable[list[float]]) -> list[float]:
    return [value for values in lists for value in values]
