"""SAEBench's autointerp score: one prompt shows the latent's held-out sequences (activating and random) in a
seeded random order; the scorer lists the indices where the latent fires; the score is the fraction of
sequences classified right. A scorer that answers "None" gets the fraction of non-activating sequences
(10/14 with SAEBench's counts), which is its chance level."""

from __future__ import annotations

import numpy as np

from autointerp.llm.types import LLMError, LLMRequest, SamplingParams
from autointerp.saebench_protocol import (
    SHOWN_AS,
    parse_predictions,
    prediction_max_tokens,
    render,
    scoring_messages,
)
from autointerp.score.answers import AnswerError
from autointerp.score.base import Outcome, Result, ScoringTask
from autointerp.score.items import ScoredExample
from autointerp.score.metrics import binary_metrics
from autointerp.score.tasks import all_failed, failure_counts, mark_failed
from autointerp.texts import TokenTexts


class SAEBenchTask(ScoringTask):
    def __init__(
        self, explanation: str, items: list[ScoredExample], texts: TokenTexts, rng: np.random.Generator
    ):
        order = rng.permutation(len(items))
        self.items = [items[i] for i in order]
        documents = [render(texts.pieces(item.example.tokens)) for item in self.items]
        for item, document in zip(self.items, documents, strict=True):
            item.shown = document
        n_correct = sum(item.label for item in self.items)
        seed = int(rng.integers(2**31))
        messages = scoring_messages(explanation, documents, n_correct, seed)
        params = SamplingParams(temperature=0.0, max_tokens=prediction_max_tokens(len(documents)))
        self.requests = [LLMRequest(messages, params)]

    def finish(self, results: list[Result]) -> Outcome:
        (result,) = results
        predicted = None if isinstance(result, LLMError) else parse_predictions(result.text)
        if predicted is None:
            unreadable = AnswerError(
                f"{getattr(result, 'text', '').strip()[:60]!r} lists no indices nor None"
            )
            failure = result if isinstance(result, LLMError) else unreadable
            for item in self.items:
                mark_failed(item, failure)
        else:
            for index, item in enumerate(self.items, start=1):
                item.prediction = int(index in predicted)
        labels = [item.label for item in self.items]
        predictions = [item.prediction for item in self.items]
        metrics = binary_metrics(labels, predictions)
        metrics["score"] = metrics["accuracy"]  # SAEBench's name for the fraction classified right
        examples = [item.to_dict() | {"shown_as": SHOWN_AS} for item in self.items]
        return Outcome(metrics, examples, all_failed(self.items), failures=failure_counts(self.items))
