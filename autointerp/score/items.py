"""What a scorer shows: a latent's held-out examples as labelled excerpts (plain, highlighted, fuzzed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from autointerp.examples import Example, LatentExamples
from autointerp.examples.render import mark, plain
from autointerp.texts import DOCUMENT_SEPARATOR, TokenTexts


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
    error_kind: str | None = None
    """`transient`, `rejected` or `parse` (see `score.tasks.failure_kind`), with `error`."""

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
    examples: LatentExamples,
    texts: TokenTexts,
    mode: str,
    rng: np.random.Generator,
    threshold: float = 0.0,
) -> list[ScoredExample]:
    """Correctly highlighted activating excerpts (label 1) and wrongly highlighted ones (label 0).

    Correct highlights are the tokens the explainer would see highlighted: activation above `threshold`
    times the latent's maximum (`explainer.highlight_threshold`), and always the excerpt's peak. Wrong
    highlights copy the shape of real ones (the same runs of tokens), so their count and contiguity tell
    nothing: `activating` mode moves an excerpt's own highlight pattern, unwrapped, onto tokens where the
    latent is silent; `non_activating` lays a random activating excerpt's pattern, in place, on a scoring
    negative. Special tokens (shown as nothing) are never highlighted. Where a highlight sits tells nothing
    either, provided the held-out windows are placed at random around their peak
    (`examples.test_windows: random`).
    """
    cutoff = threshold * examples.max_activation
    test = [(e, texts.pieces(e.tokens), _real(e, cutoff)) for e in examples.test]
    items = [_highlighted(e, "activating", 1, real, pieces) for e, pieces, real in test]
    if mode == "activating":
        for example, pieces, real in test:  # the real pattern moved onto silent, visible tokens
            mask = _fit(real, (example.activations <= 0) & _visible(pieces), rng, keep_in_place=False)
            if mask.any():
                items.append(_highlighted(example, "fuzzed", 0, mask, pieces))
        return items
    for example in examples.test_negatives:
        pieces = texts.pieces(example.tokens)
        mask = _borrowed_pattern(example, pieces, examples.test, cutoff, rng)
        items.append(_highlighted(example, "non_activating", 0, mask, pieces))
    return items


@dataclass
class IntruderTrial:
    """k excerpts, all activating but one; `intruder` is its position."""

    items: list[ScoredExample]
    intruder: int
    quantile: int | None = None
    """The activation quantile every activating excerpt of the trial comes from (None: drawn unbinned)."""
    prediction: int | None = None
    probability: float | None = None
    error: str | None = None
    error_kind: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "trial",
            "label": self.intruder,
            "quantile": self.quantile,
            "prediction": self.prediction,
            "probability": self.probability,
            "error": self.error,
            "excerpts": [item.to_dict() for item in self.items],
        }


def intruder_trials(
    examples: LatentExamples, texts: TokenTexts, size: int, rng: np.random.Generator, threshold: float = 0.0
) -> list[IntruderTrial]:
    """As many trials as the held-out examples allow, each of activating excerpts of one activation quantile
    where the quantile has enough (as Paulo & Belrose draw them, so accuracy can be read per quantile), the
    rest mixed; each excerpt is used once.

    Activating excerpts are highlighted like the explainer's (above `threshold` times the latent's maximum).
    The intruder (a scoring negative) is highlighted with a random activating excerpt's pattern, in place,
    so the number and position of highlights are no tell.
    """
    cutoff = threshold * examples.max_activation
    groups: dict[int | None, list[Example]] = {}
    for example in examples.test:
        groups.setdefault(example.quantile, []).append(example)
    chunks: list[tuple[int | None, list[Example]]] = []
    leftover: list[Example] = []
    for quantile in sorted(groups, key=lambda q: -1 if q is None else q):
        members = [groups[quantile][i] for i in rng.permutation(len(groups[quantile]))]
        whole = len(members) - len(members) % (size - 1)
        chunks += [(quantile, members[s : s + size - 1]) for s in range(0, whole, size - 1)]
        leftover += members[whole:]
    # what no quantile can fill on its own makes mixed trials (quantile None), so no excerpt is wasted
    chunks += [(None, leftover[s : s + size - 1]) for s in range(0, len(leftover) - size + 2, size - 1)]
    trials = []
    for (quantile, chosen), negative in zip(chunks, examples.test_negatives, strict=False):
        items = [_highlighted(e, "activating", 0, _real(e, cutoff), texts.pieces(e.tokens)) for e in chosen]
        pieces = texts.pieces(negative.tokens)
        mask = _borrowed_pattern(negative, pieces, examples.test, cutoff, rng)
        position = int(rng.integers(size))
        items.insert(position, _highlighted(negative, "non_activating", 1, mask, pieces))
        trials.append(IntruderTrial(items, position, quantile=quantile))
    return trials


def _plain(example: Example, texts: TokenTexts) -> str:
    return plain(texts.pieces(example.tokens))


def _highlighted(
    example: Example, kind: str, label: int, mask: np.ndarray, pieces: list[str]
) -> ScoredExample:
    return ScoredExample(example, kind, label, mark(pieces, mask), highlighted=np.flatnonzero(mask).tolist())


def _visible(pieces: list[str]) -> np.ndarray:
    """Positions whose token shows as text of its own: special tokens render as nothing, or as the document
    separator, and a wrong highlight there would be a tell."""
    return np.array([piece not in ("", DOCUMENT_SEPARATOR) for piece in pieces], dtype=bool)


def _real(example: Example, cutoff: float) -> np.ndarray:
    """The tokens shown highlighted in an activating excerpt: active and above `cutoff`, and always its peak
    (an activating excerpt without highlights would be a tell)."""
    mask = (example.activations > 0) & (example.activations > cutoff)
    mask[example.peak] = example.activations[example.peak] > 0
    return mask


def _borrowed_pattern(
    target: Example, pieces: list[str], sources: list[Example], cutoff: float, rng: np.random.Generator
) -> np.ndarray:
    """A random activating example's highlight pattern, in place, on the visible tokens of `target` (shown
    as `pieces`; moved as a whole where it would land on a special token, so its count and runs are kept)."""
    visible = _visible(pieces)
    if not sources:
        return _random_mask(visible, 1, rng)
    source = sources[int(rng.integers(len(sources)))]
    pattern = np.zeros(len(target.tokens), bool)
    width = min(len(pattern), len(source.activations))
    pattern[:width] = _real(source, cutoff)[:width]
    return _fit(pattern, visible, rng, keep_in_place=True)


def _fit(
    pattern: np.ndarray, allowed: np.ndarray, rng: np.random.Generator, keep_in_place: bool
) -> np.ndarray:
    """`pattern` (kept in place if allowed and `keep_in_place`), else moved by a uniformly random shift that
    keeps it inside the window and on `allowed` tokens; failing that, as many random allowed tokens."""
    if keep_in_place and not (pattern & ~allowed).any():
        return pattern
    positions = np.flatnonzero(pattern)
    if not len(positions):
        return pattern
    candidates = np.arange(-int(positions[0]), len(pattern) - int(positions[-1]))
    shifts = candidates[allowed[positions + candidates[:, None]].all(axis=1) & (candidates != 0)]
    if len(shifts):
        moved = np.zeros(len(pattern), bool)
        moved[positions + int(rng.choice(shifts))] = True
        return moved
    return _random_mask(allowed, len(positions), rng)


def _random_mask(allowed: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    positions = np.flatnonzero(allowed)
    chosen = rng.choice(positions, size=min(count, len(positions)), replace=False)
    mask = np.zeros(len(allowed), bool)
    mask[chosen] = True
    return mask
