"""The examples of one latent: explainer and held-out activating windows, and non-activating windows.

No token shown to the explainer is in a test example or a scoring negative, no two windows of one set share
a token, no test excerpt is token for token equal to an explainer excerpt, and every draw is seeded by
(run seed, hookpoint, latent, purpose). What the explainer sees (its activating windows and its negatives)
is drawn before, and independently of, everything held out for scoring: the keys in `TEST_ONLY_KEYS` change
the test set only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autointerp.cache import CacheReader, LatentActivations
from autointerp.config import ExamplesConfig
from autointerp.examples.negatives import DecodeFn, EmbedFn, negative_samplers
from autointerp.examples.sampling import Accept, Draw, sample_explain, sample_test
from autointerp.examples.selection import rng_for
from autointerp.examples.windows import Candidates, Cells, Example, TokenDisjoint, Windows

_EXAMPLE_LISTS = ("explain", "test", "explain_negatives", "test_negatives")
TEST_ONLY_KEYS = frozenset(
    {
        "examples.n_test",
        "examples.n_negative",
        "examples.min_test",
        "examples.test_windows",
        "examples.test_sampling",
        "examples.n_test_top",
    }
)
"""Example keys that shape only what is held out for scoring, never what the explainer sees."""


@dataclass
class LatentExamples:
    """Everything drawn for one latent; a skipped latent has a reason and no examples."""

    hookpoint: str
    latent: int
    num_activations: int
    """Tokens where the latent fires."""
    max_activation: float
    num_windows: int = 0
    """Grid cells (windows of `examples.window` tokens) where the latent fires: what admission counts."""
    explain: list[Example] = field(default_factory=list)
    """Activating examples for the explainer, highest activation first."""
    test: list[Example] = field(default_factory=list)
    """Held-out activating examples for scoring, highest activation first."""
    explain_negatives: list[Example] = field(default_factory=list)
    test_negatives: list[Example] = field(default_factory=list)
    skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "hookpoint": self.hookpoint,
            "latent": self.latent,
            "num_activations": self.num_activations,
            "max_activation": self.max_activation,
            "num_windows": self.num_windows,
            "skipped": self.skipped,
        }
        return data | {name: [e.to_dict() for e in getattr(self, name)] for name in _EXAMPLE_LISTS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatentExamples:
        lists = {name: [Example.from_dict(e) for e in data.get(name, [])] for name in _EXAMPLE_LISTS}
        return cls(
            hookpoint=data["hookpoint"],
            latent=int(data["latent"]),
            num_activations=int(data["num_activations"]),
            max_activation=float(data["max_activation"]),
            num_windows=int(data.get("num_windows", 0)),
            skipped=data.get("skipped"),
            **lists,
        )

    def explainer_view_digest(self) -> str:
        """Digest of every window the explainer was given (activating and negative)."""
        return explainer_view_digest(_windows(self.explain), _windows(self.explain_negatives))


def explainer_view_digest(explain: Sequence[tuple[int, int]], negatives: Sequence[tuple[int, int]]) -> str:
    """A short digest of the (sequence, start) windows shown to the explainer, its negatives included, to
    check at score time that the explainer saw what this config draws."""
    plain = {
        "explain": [list(map(int, w)) for w in explain],
        "negatives": [list(map(int, w)) for w in negatives],
    }
    return hashlib.sha256(json.dumps(plain).encode()).hexdigest()[:16]


def _windows(examples: list[Example]) -> list[tuple[int, int]]:
    return [(e.sequence, e.start) for e in examples]


class ExampleBuilder:
    """Draws the examples of latents of one hookpoint's cache (its token file memory-mapped)."""

    def __init__(
        self,
        reader: CacheReader,
        cfg: ExamplesConfig,
        min_activations: int,
        seed: int,
        hookpoint: str,
        decoder: np.ndarray | None = None,
        embed: EmbedFn | None = None,
        decode: DecodeFn | None = None,
    ):
        self.reader = reader
        self.cfg = cfg
        self.min_activations = min_activations
        self.seed = seed
        self.hookpoint = hookpoint
        self.windows = Windows(reader.token_array(), cfg.window)
        pools = (rng_for(seed, hookpoint, "negative-pool"), rng_for(seed, hookpoint, "test-negative-pool"))
        self.explain_negatives, self.test_negatives = negative_samplers(
            cfg, self.windows, reader, pools, decoder, embed, decode
        )

    def build(self, latent: int, cut_held_out: bool = True) -> LatentExamples:
        """The latent's examples, or why it is skipped. With `cut_held_out=False` the held-out windows are
        drawn (so the same latents are skipped) but not cut out: `test` and `test_negatives` stay empty (the
        explain stage shows only the explainer's view and needs neither)."""
        latent = int(latent)
        acts = self.reader.latent(latent)
        count = len(acts.token_index)
        result = LatentExamples(self.hookpoint, latent, count, float(acts.activation.max()) if count else 0.0)
        cells = self.windows.cells(acts)
        result.num_windows = len(cells)
        if len(cells) < self.min_activations:
            return _skip(result, f"too few activating windows ({len(cells)} < {self.min_activations})")
        cells = cells.top(self.cfg.max_candidates)
        shown = self._draw_explainer_view(acts, cells, result)
        test = self._draw_test(acts, cells, shown, result)
        minimum = self.cfg.min_held_out(self.cfg.n_test)
        if len(test) < minimum:
            return _skip(result, f"too few held-out activating windows ({len(test)} < {minimum})")
        seen = self._firsts(result.explain + result.explain_negatives) + test.firsts(self.windows.ctx_len)
        negatives = self.test_negatives.sample(
            acts,
            result.explain,
            self.cfg.n_negative,
            self._rng(latent, "test-negatives"),
            TokenDisjoint(self.windows.width, seen),
        )
        minimum = self.cfg.min_held_out(self.cfg.n_negative)
        if len(negatives) < minimum:
            return _skip(result, f"too few scoring negatives ({len(negatives)} < {minimum})")
        if cut_held_out:
            result.test = test.cut(self.windows, acts)
            result.test_negatives = _Drawn.of(negatives).cut(self.windows, acts)
        return result

    def _draw_explainer_view(
        self, acts: LatentActivations, cells: Cells, result: LatentExamples
    ) -> Candidates:
        """The explainer's activating windows and its negatives (clear of them), on their own streams and
        from keys the test set does not use; returns the placed windows the activating ones came from."""
        shown = self.windows.place(acts, cells, "center" if self.cfg.center else "grid")
        rng = self._rng(result.latent, "explain")
        explain = sample_explain(shown.max_activation, self.cfg, rng, self._disjoint(shown))
        result.explain = _Drawn.chosen(shown, explain).cut(self.windows, acts)
        negatives = self.explain_negatives.sample(
            acts,
            result.explain,
            self.cfg.n_explain_negative,
            self._rng(result.latent, "explain-negatives"),
            TokenDisjoint(self.windows.width, self._firsts(result.explain)),
        )
        result.explain_negatives = _Drawn.of(negatives).cut(self.windows, acts)
        return shown

    def _draw_test(
        self, acts: LatentActivations, cells: Cells, shown: Candidates, result: LatentExamples
    ) -> _Drawn:
        """The held-out activating windows: none sharing a token with a window the explainer saw (activating
        or negative), or repeating an explainer window's text."""
        held_out = self._held_out(acts, cells, shown, result.latent)
        seen = np.array(self._firsts(result.explain + result.explain_negatives), dtype=np.int64)
        blocked = self.windows.overlaps(held_out.first, seen)
        rng = self._rng(result.latent, "test")
        accept = self._new_text(held_out, result.explain)
        return _Drawn.chosen(held_out, sample_test(held_out.max_activation, blocked, self.cfg, rng, accept))

    def _held_out(self, acts: LatentActivations, cells: Cells, shown: Candidates, latent: int) -> Candidates:
        """The windows test examples are drawn from: by `test_windows`, placed at a random offset around
        each cell's peak (seeded) or like the explainer's."""
        if self.cfg.test_windows == "like_explain":
            return shown
        return self.windows.place(acts, cells, "random", self._rng(latent, "test-windows"))

    def _disjoint(self, candidates: Candidates) -> Accept:
        """An `accept` test keeping a draw's windows token-disjoint."""
        accepted = TokenDisjoint(self.windows.width)
        first = candidates.first.tolist()
        return lambda i: accepted.add(first[i])

    def _new_text(self, candidates: Candidates, explain: list[Example]) -> Accept:
        """An `accept` test refusing windows whose tokens equal an explainer window's, and keeping the
        draw token-disjoint."""
        seen = {e.tokens.astype(np.int32).tobytes() for e in explain}
        disjoint = self._disjoint(candidates)
        tokens, width = self.windows.tokens, self.windows.width
        sequences, starts = candidates.sequence.tolist(), candidates.start.tolist()

        def accept(i: int) -> bool:
            window = tokens[sequences[i], starts[i] : starts[i] + width]
            return window.astype(np.int32, copy=False).tobytes() not in seen and disjoint(i)

        return accept

    def _firsts(self, examples: list[Example]) -> list[int]:
        return [e.sequence * self.windows.ctx_len + e.start for e in examples]

    def _rng(self, latent: int, purpose: str) -> np.random.Generator:
        return rng_for(self.seed, self.hookpoint, latent, purpose)


@dataclass(frozen=True)
class _Drawn:
    """Windows drawn for one set of examples, in the set's order, not yet cut out of the cache."""

    sequence: np.ndarray
    start: np.ndarray
    quantiles: list[int | None]

    @classmethod
    def of(cls, windows: Sequence[tuple[int, int]]) -> _Drawn:
        """Windows (sequence, start) in the order given, drawn unbinned."""
        sequence = np.array([s for s, _ in windows], dtype=np.int64)
        start = np.array([a for _, a in windows], dtype=np.int64)
        return cls(sequence, start, [None] * len(windows))

    @classmethod
    def chosen(cls, candidates: Candidates, draws: list[Draw]) -> _Drawn:
        """The drawn candidates, highest activation first."""
        index = np.array([i for i, _ in draws], dtype=np.int64)
        order = np.argsort(-candidates.max_activation[index], kind="stable")
        quantiles = [draws[i][1] for i in order.tolist()]
        return cls(candidates.sequence[index[order]], candidates.start[index[order]], quantiles)

    def __len__(self) -> int:
        return len(self.sequence)

    def firsts(self, ctx_len: int) -> list[int]:
        """Global index of each window's first token."""
        return (self.sequence * ctx_len + self.start).tolist()

    def cut(self, windows: Windows, acts: LatentActivations) -> list[Example]:
        return windows.examples(acts, self.sequence, self.start, self.quantiles)


def _skip(result: LatentExamples, reason: str) -> LatentExamples:
    result.skipped = reason
    for name in _EXAMPLE_LISTS:
        setattr(result, name, [])
    return result
