"""The score stage's shared vocabulary: what is scored (targets), what scoring gives (outcomes), what it
costs (tallies), and the inputs a scorer's task is built from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autointerp.config import RunConfig
from autointerp.examples import LatentExamples
from autointerp.examples.selection import rng_for
from autointerp.llm.types import LLMError, LLMRequest, LLMResponse
from autointerp.texts import TokenTexts

Result = LLMResponse | LLMError
"""What a scorer's request gives back: an answer, or why there is none."""


@dataclass(frozen=True)
class Target:
    """One record to write: a scorer (or its control) on one latent, with the explanation it scores."""

    scorer: str
    control: str | None
    hookpoint: str
    latent: int
    explanation: str | None
    explanation_of: int | None
    """The latent whose explanation is scored (another one under the random-explanation control)."""

    @property
    def directory(self) -> str:
        return scorer_dir(self.scorer, self.control)


def scorer_dir(scorer: str, control: str | None) -> str:
    """`scores/<scorer>` or, for a control, `scores/<scorer>.<control>`."""
    return f"{scorer}.{control}" if control else scorer


@dataclass
class Outcome:
    """A latent's result under one scorer: metrics, per-example verdicts, or why it has none."""

    metrics: dict[str, Any] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Scorer-specific fields added to the record (e.g. the intervention's promoted tokens)."""
    flags: list[str] = field(default_factory=list)
    """Caveats of a scored latent (e.g. `kl_missed`), counted per flag in the summary."""
    failures: dict[str, int] = field(default_factory=dict)
    """Failed examples by kind (`transient`, `rejected`, `parse`): a rerun redoes a latent with transient
    failures, and the others on request."""

    @property
    def error_kind(self) -> str | None:
        """Why the latent has no score, as a rerun reads it: `transient` when any example failed for a
        transient reason, else the failures' kind, `internal` for an error of this tool."""
        if self.error is None:
            return None
        if self.failures.get("transient"):
            return "transient"
        return next(iter(self.failures), "internal")


class ScoringTask:
    """One scorer x one latent: `requests` go to the LLM; `finish` gets their results in the same order."""

    requests: list[LLMRequest]

    def finish(self, results: list[Result]) -> Outcome:
        raise NotImplementedError


@dataclass(frozen=True)
class TaskInputs:
    """What a scorer builds one latent's task from."""

    config: RunConfig
    target: Target
    examples: LatentExamples
    texts: TokenTexts

    @property
    def explanation(self) -> str:
        return self.target.explanation or ""

    def rng(self, purpose: str) -> np.random.Generator:
        """Seeded by scorer, not by control: a control sees the same items, only the explanation differs."""
        t = self.target
        return rng_for(self.config.seed, t.hookpoint, t.latent, t.scorer, purpose)


@dataclass
class ScorerTally:
    scored: int = 0
    failed: int = 0
    skipped: int = 0
    already_done: int = 0
    retried: int = 0
    """Finished latents redone because they had failed (transient failures, or any with retry_unparseable)."""
    not_explained: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class ScoreReport:
    tallies: dict[tuple[str, str], ScorerTally] = field(default_factory=dict)
    """(scorer directory name, hookpoint) -> tally."""
    phases: dict[str, float] = field(default_factory=dict)
    """Wall seconds of each phase (scorer LLM, surprisal, embedding, intervention), model loading included."""
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    """Caveats of the configured scorers, for the console."""
