"""Simulation scoring (Bills et al. 2023): predict every token's activation from the explanation alone.

"All at once", as Bills et al.: after two demonstrations with true activations, the scorer's reply is
prefilled with one `token<TAB>unknown` line per token, and the prompt logprobs where each placeholder begins
give a distribution over 0-9; the prediction is its expected value. Without prompt
logprobs the scorer writes the lines itself and the numbers are parsed. Score: Pearson r between predicted
and true activations, pooled over the tokens of every scored excerpt (activating and not).
"""

from __future__ import annotations

import numpy as np

from autointerp.llm.types import LLMError, LLMRequest, LLMResponse, SamplingParams, TokenLogprob
from autointerp.score.answers import AnswerError, digit_probabilities
from autointerp.score.base import Outcome, Result, ScoringTask
from autointerp.score.items import ScoredExample
from autointerp.score.metrics import pearson
from autointerp.score.prompts import SIMULATION_PLACEHOLDER, simulation_messages
from autointerp.score.tasks import TOP_LOGPROBS, all_failed, failure_counts, mark_failed
from autointerp.texts import TokenTexts

DIGITS = tuple(str(d) for d in range(10))


class SimulationTask(ScoringTask):
    def __init__(self, explanation: str, items: list[ScoredExample], texts: TokenTexts, use_logprobs: bool):
        self.items = items
        self.use_logprobs = use_logprobs
        self.predicted: list[np.ndarray | None] = [None] * len(items)
        self.requests = []
        for item in items:
            pieces = texts.pieces(item.example.tokens)
            params = (
                SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=TOP_LOGPROBS)
                if use_logprobs
                else SamplingParams(temperature=0.0, max_tokens=8 * len(pieces) + 16)
            )
            self.requests.append(LLMRequest(simulation_messages(explanation, pieces, use_logprobs), params))

    def finish(self, results: list[Result]) -> Outcome:
        for i, (item, result) in enumerate(zip(self.items, results, strict=True)):
            n = len(item.example.tokens)
            try:
                if isinstance(result, LLMError):
                    raise result
                reader = placeholder_predictions if self.use_logprobs else text_predictions
                self.predicted[i] = reader(result, n)
            except (AnswerError, LLMError) as exc:
                mark_failed(item, exc)
        scored = [i for i, p in enumerate(self.predicted) if p is not None]
        true = np.concatenate([self.items[i].example.activations for i in scored]) if scored else np.zeros(0)
        predicted = np.concatenate([self.predicted[i] for i in scored]) if scored else np.zeros(0)
        correlation = pearson(predicted.tolist(), true.tolist())
        if correlation is None and len(true) > 1 and np.ptp(true) > 0:
            correlation = 0.0  # constant predictions: no information about the activations, scored as such
        metrics = {
            "pearson": correlation,
            "n_tokens": int(len(true)),
            "n_examples": len(scored),
            "n_failed": len(self.items) - len(scored),
        }
        examples = [
            item.to_dict() | {"predicted": None if p is None else np.round(p, 3).tolist()}
            for item, p in zip(self.items, self.predicted, strict=True)
        ]
        error = all_failed(self.items)
        if error is None and metrics["pearson"] is None:
            error = "pearson undefined: predictions or activations are constant"
        return Outcome(metrics, examples, error, failures=failure_counts(self.items))


def placeholder_predictions(response: LLMResponse, n: int) -> np.ndarray:
    """Expected 0-9 value at each of the last `n` placeholder positions of the prompt."""
    positions = _placeholders(response.prompt_logprobs or [])
    if len(positions) < n:
        raise AnswerError(f"found {len(positions)} of {n} placeholder positions in the prompt logprobs")
    values = []
    for position in positions[-n:]:
        mass = digit_probabilities(position, DIGITS)
        total = sum(mass.values())
        if total <= 0:
            raise AnswerError("no digit among the top logprobs at a placeholder")
        values.append(sum(int(d) * p for d, p in mass.items()) / total)
    return np.array(values, dtype=np.float32)


def _placeholders(tokens: list[TokenLogprob | None]) -> list[TokenLogprob]:
    """The positions where a placeholder begins: right after a tab (or as a token that merges the tab with
    the placeholder's first characters). Their top alternatives are the model's guesses for the value."""
    found = []
    for previous, current in zip(tokens, tokens[1:], strict=False):
        if current is None:
            continue
        merged = current.token.startswith("\t") and _starts_placeholder(current.token[1:])
        after_tab = (
            previous is not None and previous.token.endswith("\t") and _starts_placeholder(current.token)
        )
        if merged or after_tab:
            found.append(current)
    return found


def _starts_placeholder(text: str) -> bool:
    text = text.strip()
    return bool(text) and SIMULATION_PLACEHOLDER.startswith(text)


def text_predictions(response: LLMResponse, n: int) -> np.ndarray:
    """The number after the last tab of each written line; `n` are needed."""
    values = []
    for line in response.text.splitlines():
        if "\t" not in line:
            continue
        field = line.rsplit("\t", 1)[1].strip()
        if field.isdigit():
            values.append(min(int(field), 9))
    if len(values) < n:
        raise AnswerError(f"expected {n} token lines with a number, got {len(values)}")
    return np.array(values[:n], dtype=np.float32)
