"""Score records: one JSONL line per (scorer, hookpoint, latent), written as soon as the latent is done,
with the tallies and progress that go with it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autointerp.config import RunConfig
from autointerp.examples.compact import pack
from autointerp.records import RecordWriter, records_file
from autointerp.rundir import SCORES_DIR, ShardSpec, config_hash
from autointerp.score.base import Outcome, Target
from autointerp.score.plan import Plan
from autointerp.score.registry import answering_backend, get_scorer

ProgressFn = Callable[[int, int], None]
"""Called with (latent records just written, total records this task will write)."""


class ScoreWriter:
    """Per (scorer directory, hookpoint) record writers, tallies and progress."""

    def __init__(self, config: RunConfig, plan: Plan, shard: ShardSpec, progress: ProgressFn | None):
        self.config, self.plan, self.shard, self.progress = config, plan, shard, progress
        self.total = sum(len(targets) for targets in plan.targets.values())
        self.writers: dict[tuple[str, str], RecordWriter] = {}
        self.backends: dict[str, str | None] = {
            name: answering_backend(config, get_scorer(name)) for name in config.scorers
        }

    def write(self, target: Target, outcome: Outcome, usage: dict[str, Any] | None = None) -> None:
        """Record a scored latent; a failed one when `outcome.error` is set or the headline is undefined."""
        headline = get_scorer(target.scorer).headline
        error = outcome.error
        score = outcome.metrics.get(headline)
        kind = outcome.error_kind
        if not error and score is None:
            error = outcome.metrics.get("undefined") or f"{headline} is undefined for this latent"
            kind = "undefined"
        self._write(target, outcome, usage, error=error, score=None if error else score, kind=kind)

    def fail(self, target: Target, error: str, kind: str = "input") -> None:
        """Record a latent that could not be scored, and why: its inputs (`input`: no explanation, examples
        that changed since explain; not redone until they change) or an error of this tool (`internal`)."""
        self._write(target, Outcome(error=error), None, error=error, score=None, kind=kind)

    def skip(self, target: Target, reason: str) -> None:
        """Record a latent that is not scored by design (too few activations, not explained)."""
        self._write(target, Outcome(), None, skipped=reason, score=None)

    def _write(
        self,
        target: Target,
        outcome: Outcome,
        usage: dict[str, Any] | None,
        *,
        score: float | None,
        error: str | None = None,
        skipped: str | None = None,
        kind: str | None = None,
    ) -> None:
        name = target.directory
        self._tally(name, target.hookpoint, usage, error, skipped)
        key = self.plan.keys[(name, target.hookpoint)]
        record = {
            "latent": target.latent,
            "hookpoint": target.hookpoint,
            "scorer": target.scorer,
            "control": target.control,
            "explanation": target.explanation,
            "explanation_of": target.explanation_of,
            "backend": self.backends[target.scorer],
            "score": score,
            "metrics": outcome.metrics,
            "examples": pack(outcome.examples),
            "usage": usage,
            "error": error,
            "error_kind": None if error is None else kind or outcome.error_kind or "internal",
            "failures": outcome.failures,
            "skipped": skipped,
            "flags": outcome.flags,
            "config_hash": config_hash(key),
            "config_key": key,
        }
        self._writer(name, target.hookpoint).write(record | outcome.extra)
        if self.progress:
            self.progress(1, self.total)

    def _tally(
        self, name: str, hookpoint: str, usage: dict[str, Any] | None, error: str | None, skipped: str | None
    ) -> None:
        tally = self.plan.report.tallies[(name, hookpoint)]
        if skipped:
            tally.skipped += 1
        elif error:
            tally.failed += 1
        else:
            tally.scored += 1
        if usage:
            tally.prompt_tokens += usage["prompt_tokens"]
            tally.cached_tokens += usage["cached_tokens"]
            tally.completion_tokens += usage["completion_tokens"]

    def _writer(self, name: str, hookpoint: str) -> RecordWriter:
        if (name, hookpoint) not in self.writers:
            path = records_file(self.config.run_dir / SCORES_DIR / name, hookpoint, self.shard)
            self.writers[(name, hookpoint)] = RecordWriter(path)
        return self.writers[(name, hookpoint)]

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
