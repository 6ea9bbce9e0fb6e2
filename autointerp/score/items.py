"""What a scorer shows: a latent's held-out examples as labelled excerpts (plain, highlighted, fuzzed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from autointerp.examples import Example, LatentExamples
from autointerp.explain.prompts import ShownExample, highlight
from autointerp.texts import TokenTexts


@dataclass
class ScoredExample:
    """One example as shown to a scorer, with its true label and (once scored) the scorer's verdict."""

    example: Example
    kind: str
    """activating, non_activating, or fuzzed (an activating excerpt with wrong tokens highlighted)."""
    label: int
    shown: str
    highlighted: list[int] | None = None
    """Window positions shown highlighted (fuzzing and intruder)."""
    prediction: int | None = None
    probability: float | None = None
    value: float | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.example.to_dict(),
            "kind": self.kind,
            "label": self.label,
            "shown": self.shown,
            "highlighted": self.highlighted,
            "prediction": self.prediction,
            "probability": self.probability,
            "value": self.value,
            "error": self.error,
        }


def detection_items(examples: LatentExamples, texts: TokenTexts) -> list[ScoredExample]:
    """Held-out activating excerpts (label 1) and scoring negatives (label 0), without highlights."""
    items = [ScoredExample(e, "activating", 1, _plain(e, texts)) for e in examples.test]
    return items + [ScoredExample(e, "non_activating", 0, _plain(e, texts)) for e in examples.test_negatives]


def fuzzing_items(
    examples: LatentExamples, texts: TokenTexts, mode: str, rng: np.random.Generator
) -> list[ScoredExample]:
    """Correctly highlighted activating excerpts (label 1) and wrongly highlighted ones (label 0).

    `activating` mode highlights random non-activating tokens inside each activating excerpt (as many as it
    has activating tokens); `non_activating` highlights random tokens of the scoring negatives (as many as
    the activating excerpts have on average). Wrong positions are uniform over the window: no positional tell.
    """
    items = [_highlighted(e, "activating", 1, e.activations > 0, texts) for e in examples.test]
    if mode == "activating":
        for example in examples.test:
            count = int((example.activations > 0).sum())
            mask = _random_mask(example.activations <= 0, count, rng)
            if mask.any():
                items.append(_highlighted(example, "fuzzed", 0, mask, texts))
        return items
    count = _mean_active(examples.test)
    for example in examples.test_negatives:
        mask = _random_mask(np.ones(len(example.tokens), bool), count, rng)
        items.append(_highlighted(example, "non_activating", 0, mask, texts))
    return items


@dataclass
class IntruderTrial:
    """k excerpts, all activating but one; `intruder` is its position."""

    items: list[ScoredExample]
    intruder: int
    prediction: int | None = None
    probability: float | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "trial",
            "label": self.intruder,
            "prediction": self.prediction,
            "probability": self.probability,
            "error": self.error,
            "excerpts": [item.to_dict() for item in self.items],
        }


def intruder_trials(
    examples: LatentExamples, texts: TokenTexts, size: int, rng: np.random.Generator
) -> list[IntruderTrial]:
    """As many trials as the held-out examples allow; each activating excerpt is used once.

    The intruder (a scoring negative) gets as many random highlights as the activating excerpts have on
    average, so the highlight count is no tell.
    """
    count = _mean_active(examples.test)
    n_trials = min(len(examples.test) // (size - 1), len(examples.test_negatives))
    order = rng.permutation(len(examples.test))
    trials = []
    for t in range(n_trials):
        chosen = [examples.test[i] for i in order[t * (size - 1) : (t + 1) * (size - 1)]]
        items = [_highlighted(e, "activating", 0, e.activations > 0, texts) for e in chosen]
        negative = examples.test_negatives[t]
        mask = _random_mask(np.ones(len(negative.tokens), bool), count, rng)
        position = int(rng.integers(size))
        items.insert(position, _highlighted(negative, "non_activating", 1, mask, texts))
        trials.append(IntruderTrial(items, position))
    return trials


def _plain(example: Example, texts: TokenTexts) -> str:
    shown = ShownExample(texts.pieces(example.tokens), np.zeros(len(example.tokens), np.float32))
    return highlight(shown, 1.0, 0.0)[0]


def _highlighted(
    example: Example, kind: str, label: int, mask: np.ndarray, texts: TokenTexts
) -> ScoredExample:
    shown = ShownExample(texts.pieces(example.tokens), mask.astype(np.float32))
    text = highlight(shown, 1.0, 0.0)[0]
    return ScoredExample(example, kind, label, text, highlighted=np.flatnonzero(mask).tolist())


def _random_mask(allowed: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    positions = np.flatnonzero(allowed)
    chosen = rng.choice(positions, size=min(count, len(positions)), replace=False)
    mask = np.zeros(len(allowed), bool)
    mask[chosen] = True
    return mask


def _mean_active(examples: list[Example]) -> int:
    counts = [int((e.activations > 0).sum()) for e in examples]
    return max(1, round(float(np.mean(counts)))) if counts else 1
