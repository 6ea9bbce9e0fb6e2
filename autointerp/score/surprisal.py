"""Surprisal scoring: does the explanation, as a prefix, make a base LM less surprised by the excerpt?

Each excerpt is scored twice in one forward pass each (prompt logprobs, no generation): after the
explanation and after a neutral description. The value is the log-likelihood gain of the tokens the two
prompts share at the end (the excerpt, plus a label that precedes it and so shifts every excerpt of a
latent by the same amount). Score: AUROC of the gain, activating vs non-activating.
"""

from __future__ import annotations

from autointerp.llm.types import LLMError, LLMRequest, LLMResponse, Message, SamplingParams
from autointerp.score.answers import AnswerError
from autointerp.score.base import Outcome, Result, ScoringTask
from autointerp.score.items import ScoredExample
from autointerp.score.metrics import auroc
from autointerp.score.tasks import all_failed, failure_counts, mark_failed
from autointerp.texts import TokenTexts

_TEMPLATE = "Description of the text below: {description}\n\nText:\n{text}"
_PARAMS = SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=0)


class SurprisalTask(ScoringTask):
    def __init__(self, explanation: str, items: list[ScoredExample], neutral: str, texts: TokenTexts):
        self.items = items
        self.requests = []
        for item in items:
            text = texts.text(item.example.tokens)  # the excerpt as it is, newlines included
            for description in (explanation, neutral):
                prompt = _TEMPLATE.format(description=description, text=text)
                self.requests.append(LLMRequest((Message("user", prompt),), _PARAMS, raw=True))

    def finish(self, results: list[Result]) -> Outcome:
        for i, item in enumerate(self.items):
            explained, neutral = results[2 * i], results[2 * i + 1]
            try:
                item.value = likelihood_gain(explained, neutral)
            except (AnswerError, LLMError) as exc:
                mark_failed(item, exc)
        scored = [(item.label, item.value) for item in self.items if item.value is not None]
        metrics = {
            "auroc": auroc([label for label, _ in scored], [value for _, value in scored]),
            "mean_gain_activating": _mean([value for label, value in scored if label == 1]),
            "mean_gain_non_activating": _mean([value for label, value in scored if label == 0]),
            "n_examples": len(scored),
            "n_failed": len(self.items) - len(scored),
        }
        error = all_failed(self.items)
        if error is None and metrics["auroc"] is None:
            error = "auroc undefined: activating or non-activating excerpts missing"
        examples = [item.to_dict() for item in self.items]
        return Outcome(metrics, examples, error, failures=failure_counts(self.items))


def likelihood_gain(explained: Result, neutral: Result) -> float:
    """Sum of log-likelihood gains over the tokens both prompts end with."""
    if isinstance(explained, LLMError):
        raise explained
    if isinstance(neutral, LLMError):
        raise neutral
    a, b = _logprobs(explained), _logprobs(neutral)
    shared = 0
    while shared < min(len(a), len(b)) and a[-1 - shared][0] == b[-1 - shared][0]:
        shared += 1
    if shared == 0:
        raise AnswerError("the two prompts share no final tokens")
    return sum(a[-1 - k][1] - b[-1 - k][1] for k in range(shared))


def _logprobs(response: LLMResponse) -> list[tuple[str, float]]:
    if not response.prompt_logprobs:
        raise AnswerError("the backend returned no prompt logprobs (surprisal needs them)")
    return [(p.token, p.logprob) for p in response.prompt_logprobs if p is not None]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
