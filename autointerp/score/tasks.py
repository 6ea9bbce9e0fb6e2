"""Scoring tasks: the LLM requests one scorer needs for one latent, and how their answers become metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from autointerp.llm.types import LLMError, LLMRequest, SamplingParams
from autointerp.score.answers import (
    AnswerError,
    first_token_choice,
    logprob_choice,
    parse_binary_list,
    text_choice,
)
from autointerp.score.base import Outcome, Result, ScoringTask
from autointerp.score.items import IntruderTrial, ScoredExample
from autointerp.score.metrics import binary_metrics
from autointerp.score.prompts import classification_messages, intruder_messages

TOP_LOGPROBS = 20


def single_token_params() -> SamplingParams:
    """A digit answer with its alternatives; 3 tokens so that a leading space token can be skipped."""
    return SamplingParams(temperature=0.0, max_tokens=3, logprobs=TOP_LOGPROBS)


class ClassificationTask(ScoringTask):
    """Detection or fuzzing: one excerpt per prompt read as P(1), or numbered batches answered as a list."""

    def __init__(
        self,
        kind: str,
        explanation: str,
        items: list[ScoredExample],
        per_prompt: int,
        rng: np.random.Generator,
        max_tokens: int,
    ):
        order = rng.permutation(len(items)) if per_prompt > 1 else np.arange(len(items))
        self.items = items
        self.groups = [
            [items[i] for i in order[start : start + per_prompt]]
            for start in range(0, len(items), per_prompt)
        ]
        params = (
            single_token_params()
            if per_prompt == 1
            else SamplingParams(temperature=0.0, max_tokens=max_tokens)
        )
        self.single = per_prompt == 1
        self.requests = [
            LLMRequest(
                classification_messages(kind, explanation, [item.shown for item in group], per_prompt > 1),
                params,
            )
            for group in self.groups
        ]

    def finish(self, results: list[Result]) -> Outcome:
        for group, result in zip(self.groups, results, strict=True):
            try:
                _read_group(group, result, self.single)
            except (AnswerError, LLMError) as exc:
                for item in group:
                    mark_failed(item, exc)
        labels = [item.label for item in self.items]
        predictions = [item.prediction for item in self.items]
        probabilities = [item.probability for item in self.items] if self.single else None
        metrics = binary_metrics(labels, predictions, probabilities)
        if self.single:
            metrics["n_text_answers"] = sum(
                1 for item in self.items if item.prediction is not None and item.probability is None
            )
        examples = [item.to_dict() for item in self.items]
        return Outcome(metrics, examples, all_failed(self.items), failures=failure_counts(self.items))


def _read_group(group: list[ScoredExample], result: Result, single: bool) -> None:
    if isinstance(result, LLMError):
        raise result
    if single:
        soft = logprob_choice(result, ("0", "1"))
        probability = (soft if soft is not None else text_choice(result, ("0", "1")))["1"]
        group[0].prediction = int(probability >= 0.5)
        # a hard 0/1 read from the text would tie with every other in the AUROC: it gets no probability
        group[0].probability = probability if soft is not None else None
        return
    for item, answer in zip(group, parse_binary_list(result.text, len(group)), strict=True):
        item.prediction = answer


class IntruderTask(ScoringTask):
    """Find the non-activating excerpt among activating ones; metric: accuracy over trials."""

    def __init__(self, trials: list[IntruderTrial]):
        self.trials = trials
        self.requests = [
            LLMRequest(intruder_messages([item.shown for item in trial.items]), single_token_params())
            for trial in trials
        ]

    def finish(self, results: list[Result]) -> Outcome:
        for trial, result in zip(self.trials, results, strict=True):
            digits = tuple(str(i + 1) for i in range(len(trial.items)))
            try:
                if isinstance(result, LLMError):
                    raise result
                probabilities = first_token_choice(result, digits)
            except (AnswerError, LLMError) as exc:
                mark_failed(trial, exc)
                continue
            trial.prediction = int(max(probabilities, key=lambda digit: probabilities[digit])) - 1
            trial.probability = probabilities[digits[trial.intruder]]
        scored = [t for t in self.trials if t.error is None]
        metrics = {
            "accuracy": float(np.mean([t.prediction == t.intruder for t in scored])) if scored else None,
            "mean_probability": float(np.mean([t.probability for t in scored])) if scored else None,
            "n_trials": len(scored),
            "n_failed": len(self.trials) - len(scored),
        }
        for quantile in sorted({t.quantile for t in scored if t.quantile is not None}):
            hits = [t.prediction == t.intruder for t in scored if t.quantile == quantile]
            metrics[f"accuracy_quantile_{quantile}"] = float(np.mean(hits))
        examples = [t.to_dict() for t in self.trials]
        return Outcome(metrics, examples, all_failed(self.trials), failures=failure_counts(self.trials))


def error_text(exc: Exception) -> str:
    return f"llm error: {exc}" if isinstance(exc, LLMError) else f"unreadable answer: {exc}"


def failure_kind(exc: Exception) -> str:
    """`transient` (the server could not answer now: a rerun retries it), or `rejected` / `parse` (the same
    request would likely fail again: retried on request); an unreadable answer is `parse`."""
    if isinstance(exc, LLMError):
        return str(getattr(exc, "kind", "transient"))
    return "parse"


def mark_failed(item: ScoredExample | IntruderTrial, exc: Exception) -> None:
    """Record on an item why it has no verdict."""
    item.error = error_text(exc)
    item.error_kind = failure_kind(exc)


def failure_counts(items: Sequence[ScoredExample | IntruderTrial]) -> dict[str, int]:
    """Failed items by kind."""
    counts: dict[str, int] = {}
    for item in items:
        if item.error is not None:
            kind = item.error_kind or "parse"
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def all_failed(items: list[Any]) -> str | None:
    if not items:
        return "no examples to score"
    errors = [item.error for item in items if item.error]
    if len(errors) == len(items):
        return f"every example failed ({len(errors)}), e.g. {errors[0]}"
    return None
