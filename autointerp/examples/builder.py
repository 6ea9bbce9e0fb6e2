"""The examples of one latent: explainer and held-out activating windows, and non-activating windows.

No token shown to the explainer is in a test example, explainer negatives are never scoring negatives,
and every draw is seeded by (run seed, hookpoint, latent, purpose).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autointerp.cache import CacheReader, LatentActivations
from autointerp.config import ExamplesConfig
from autointerp.examples.negatives import DecodeFn, EmbedFn, negative_sampler
from autointerp.examples.sampling import Draw, sample_explain, sample_test
from autointerp.examples.selection import rng_for
from autointerp.examples.windows import Candidates, Example, Windows

_EXAMPLE_LISTS = ("explain", "test", "explain_negatives", "test_negatives")


@dataclass
class LatentExamples:
    """Everything drawn for one latent; a skipped latent has a reason and no examples."""

    hookpoint: str
    latent: int
    num_activations: int
    """Tokens where the latent fires."""
    max_activation: float
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
            skipped=data.get("skipped"),
            **lists,
        )


class ExampleBuilder:
    """Draws the examples of latents of one hookpoint's cache; loads the token file once."""

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
        self.windows = Windows(reader.tokens().numpy(), cfg.window)
        pool_rng = rng_for(seed, hookpoint, "negative-pool")
        self.negatives = negative_sampler(cfg, self.windows, reader, pool_rng, decoder, embed, decode)

    def build(self, latent: int) -> LatentExamples:
        latent = int(latent)
        acts = self.reader.latent(latent)
        count = len(acts.token_index)
        result = LatentExamples(self.hookpoint, latent, count, float(acts.activation.max()) if count else 0.0)
        if count < self.min_activations:
            result.skipped = f"too few activations ({count} < {self.min_activations})"
            return result
        candidates = self.windows.candidates(acts, self.cfg.center)
        values = candidates.max_activation
        explain = sample_explain(values, self.cfg, self._rng(latent, "explain"))
        blocked = self.windows.overlapping(candidates, np.array([i for i, _ in explain], dtype=np.int64))
        test = sample_test(values, blocked, self.cfg, self._rng(latent, "test"))
        result.explain = self._examples(acts, candidates, explain)
        result.test = self._examples(acts, candidates, test)
        n_explain = self.cfg.n_explain_negative
        negatives = self.negatives.sample(
            acts, result.explain, n_explain + self.cfg.n_negative, self._rng(latent, "negatives")
        )
        result.explain_negatives, result.test_negatives = negatives[:n_explain], negatives[n_explain:]
        return result

    def _rng(self, latent: int, purpose: str) -> np.random.Generator:
        return rng_for(self.seed, self.hookpoint, latent, purpose)

    def _examples(self, acts: LatentActivations, candidates: Candidates, draws: list[Draw]) -> list[Example]:
        examples = [
            self.windows.example(acts, candidates.sequence[i], candidates.start[i], quantile)
            for i, quantile in draws
        ]
        return sorted(examples, key=lambda example: -example.max_activation)
