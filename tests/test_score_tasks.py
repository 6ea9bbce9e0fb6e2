"""Scorer logic on hand-built LLM responses: tasks, answer parsing, simulation, surprisal, intruder.

Milliseconds each; the real-model test only has to show that the pieces run together.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from autointerp.config import config_from_dict
from autointerp.examples import Example, LatentExamples
from autointerp.llm.types import LLMError, LLMResponse, TokenLogprob
from autointerp.score.answers import AnswerError, first_token_choice, parse_binary_list
from autointerp.score.base import Target, TaskInputs
from autointerp.score.items import IntruderTrial, ScoredExample
from autointerp.score.registry import LLM_PHASES, SCORERS
from autointerp.score.simulation import SimulationTask, placeholder_predictions, text_predictions
from autointerp.score.surprisal import SurprisalTask, likelihood_gain
from autointerp.score.tasks import ClassificationTask, IntruderTask


class Texts:
    """Token i shows as `t<i>`; token 0 is special and shows as nothing."""

    def pieces(self, tokens):
        return ["" if t == 0 else f"t{t}" for t in tokens]

    def text(self, tokens):
        return "".join(self.pieces(tokens))


def example(seed: int, active: bool, width: int = 6) -> Example:
    rng = np.random.default_rng(seed)
    acts = np.zeros(width, np.float32)
    if active:
        acts[rng.integers(1, width)] = rng.uniform(0.5, 2.0)
    return Example(seed, 0, rng.integers(1, 50, width).astype(np.int32), acts, 0 if active else None)


def items(labels: list[int]) -> list[ScoredExample]:
    kinds = {1: "activating", 0: "non_activating"}
    return [ScoredExample(example(i, bool(y)), kinds[y], y, f"excerpt {i}") for i, y in enumerate(labels)]


def answer(p_one: float, leading_space: bool = False) -> LLMResponse:
    """A single-token answer whose top logprobs give P(1) = p_one."""
    top = {"1": math.log(p_one), "0": math.log(1 - p_one)}
    digit = TokenLogprob("1" if p_one >= 0.5 else "0", max(top.values()), top)
    positions = [TokenLogprob(" ", -0.01, {" ": -0.01}), digit] if leading_space else [digit]
    return LLMResponse(text=digit.token, logprobs=positions)


def test_single_token_classification_reads_p1_and_matches_sklearn():
    labels = [1, 1, 1, 0, 0, 0]
    probabilities = [0.9, 0.6, 0.3, 0.4, 0.2, 0.7]
    task = ClassificationTask("detection", "e", items(labels), 1, np.random.default_rng(0), 64)
    assert len(task.requests) == 6 and task.requests[0].params.logprobs
    outcome = task.finish([answer(p, leading_space=i % 2 == 0) for i, p in enumerate(probabilities)])
    predictions = [int(p >= 0.5) for p in probabilities]
    assert [e["probability"] for e in outcome.examples] == pytest.approx(probabilities)
    assert outcome.metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predictions))
    assert outcome.metrics["auroc"] == pytest.approx(roc_auc_score(labels, probabilities))
    assert outcome.error is None


def test_failed_requests_are_counted_per_example_and_all_failed_is_an_error():
    task = ClassificationTask("fuzzing", "e", items([1, 0, 1, 0]), 1, np.random.default_rng(0), 64)
    outcome = task.finish([answer(0.8), LLMError("HTTP 500"), answer(0.1), answer(0.2)])
    assert outcome.metrics["n_failed"] == 1 and outcome.error is None
    assert outcome.examples[1]["error"] == "llm error: HTTP 500"
    task = ClassificationTask("fuzzing", "e", items([1, 0]), 1, np.random.default_rng(0), 64)
    outcome = task.finish([LLMError("down"), LLMResponse(text="maybe")])
    assert outcome.error.startswith("every example failed (2)")


def test_batched_classification_parses_lists_and_fails_whole_batches():
    labels = [1, 0, 1, 0, 1]
    task = ClassificationTask("detection", "e", items(labels), 2, np.random.default_rng(3), 64)
    assert len(task.requests) == 3 and task.requests[0].params.logprobs is None
    answers = [
        LLMResponse(text="[" + ", ".join(str(item.label) for item in group) + "]") for group in task.groups
    ]
    answers[1] = LLMResponse(text="I think [1, maybe]")
    outcome = task.finish(answers)
    failed = {id(item) for item in task.groups[1]}
    for item in task.items:
        if id(item) in failed:
            assert item.error.startswith("unreadable answer") and item.prediction is None
        else:
            assert item.prediction == item.label
    assert outcome.metrics["auroc"] is None, "text answers carry no probabilities"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[1, 0, 1]", [1, 0, 1]),
        ("reasoning [0,0,0] then [yes, no, True]", [1, 0, 1]),
        ("[ 1 ,0, 0 ]", [1, 0, 0]),
    ],
)
def test_binary_lists(text, expected):
    assert parse_binary_list(text, 3) == expected


@pytest.mark.parametrize("text", ["no list", "[1, 0]", "[1, 2, 0]", "[1, 0, 1, 1]"])
def test_binary_lists_refused(text):
    with pytest.raises(AnswerError):
        parse_binary_list(text, 3)


def test_first_token_choice_synonyms_only_for_binary_answers_and_text_fallback():
    top = {"Yes": math.log(0.7), "No": math.log(0.3)}
    response = LLMResponse("Yes", [TokenLogprob("Yes", top["Yes"], top)])
    assert first_token_choice(response, ("0", "1"))["1"] == pytest.approx(0.7)
    with pytest.raises(AnswerError):
        first_token_choice(response, ("1", "2", "3"))
    assert first_token_choice(LLMResponse("Excerpt 2 it is"), ("1", "2", "3")) == {
        "1": 0.0,
        "2": 1.0,
        "3": 0.0,
    }


def trial(intruder: int, size: int = 4) -> IntruderTrial:
    return IntruderTrial(items([1] * size), intruder)


def digits_answer(probabilities: dict[str, float]) -> LLMResponse:
    top = {d: math.log(p) for d, p in probabilities.items()}
    best = max(top, key=top.get)
    return LLMResponse(best, [TokenLogprob(best, top[best], top)])


def test_intruder_accuracy_and_probability_of_the_intruder():
    trials = [trial(0), trial(2), trial(3)]
    task = IntruderTask(trials)
    answers = [
        digits_answer({"1": 0.7, "2": 0.1, "3": 0.1, "4": 0.1}),  # right
        digits_answer({"1": 0.4, "2": 0.3, "3": 0.2, "4": 0.1}),  # wrong: says 1, intruder is 3
        LLMError("timeout"),
    ]
    outcome = task.finish(answers)
    assert outcome.metrics["accuracy"] == 0.5 and outcome.metrics["n_failed"] == 1
    assert outcome.metrics["mean_probability"] == pytest.approx((0.7 + 0.2) / 2)
    assert [e["prediction"] for e in outcome.examples] == [0, 0, None]


def placeholder_response(values: list[float]) -> LLMResponse:
    """Prompt logprobs of a prefilled reply: `tok<TAB>`, then a `0` whose digit mass averages `values[i]`."""
    positions: list[TokenLogprob | None] = [None, TokenLogprob("Excerpt", -1.0)]
    for value in values:
        low, high = math.floor(value), math.ceil(value)
        weight = value - low
        top = {str(low): math.log(1 - weight + 1e-9)} | ({str(high): math.log(weight)} if high != low else {})
        positions += [TokenLogprob("tok\t", -0.5), TokenLogprob("0", -1.0, top), TokenLogprob("\n", -0.1)]
    return LLMResponse("", prompt_logprobs=positions)


def test_simulation_reads_expected_values_at_placeholders_and_correlates():
    test_items = items([1, 0])
    truth = np.concatenate([item.example.activations for item in test_items])
    guesses = (truth / truth.max() * 9).tolist()
    task = SimulationTask("e", test_items, Texts(), use_logprobs=True)
    assert all(r.params.prompt_logprobs for r in task.requests)
    width = len(test_items[0].example.tokens)
    outcome = task.finish([placeholder_response(guesses[:width]), placeholder_response(guesses[width:])])
    assert outcome.metrics["pearson"] == pytest.approx(1.0, abs=1e-3)
    assert placeholder_predictions(placeholder_response([2.5, 7.0]), 2) == pytest.approx([2.5, 7.0], abs=1e-6)
    with pytest.raises(AnswerError):
        placeholder_predictions(placeholder_response([1.0]), 2)


def test_simulation_text_fallback_and_constant_predictions():
    assert text_predictions(LLMResponse("a\t3\nb\t12\nnoise\nc\t0"), 3).tolist() == [3, 9, 0]
    test_items = items([1, 0])
    task = SimulationTask("e", test_items, Texts(), use_logprobs=False)
    width = len(test_items[0].example.tokens)
    flat = LLMResponse("\n".join(["x\t4"] * width))
    outcome = task.finish([flat, flat])
    assert outcome.metrics["pearson"] == 0.0 and outcome.error is None, "no information scores 0"


def logprobs_response(tokens: list[tuple[str, float]]) -> LLMResponse:
    return LLMResponse("", prompt_logprobs=[None, *(TokenLogprob(t, lp) for t, lp in tokens)])


def test_surprisal_gain_over_the_shared_suffix_and_auroc():
    explained = logprobs_response(
        [("Desc", -3.0), ("ription", -1.0), ("Text", -0.5), ("a", -1.0), ("b", -2.0)]
    )
    neutral = logprobs_response([("Neutral", -2.0), ("Text", -0.7), ("a", -1.5), ("b", -2.5)])
    assert likelihood_gain(explained, neutral) == pytest.approx(0.2 + 0.5 + 0.5)
    with pytest.raises(AnswerError):
        likelihood_gain(logprobs_response([("x", -1.0)]), logprobs_response([("y", -1.0)]))
    task = SurprisalTask("e", items([1, 0]), "neutral", Texts())
    assert len(task.requests) == 4 and all(r.raw for r in task.requests)
    gain = logprobs_response([("z", -1.0)])
    loss = logprobs_response([("z", -2.0)])
    outcome = task.finish([gain, loss, loss, gain])  # the activating excerpt gains, the other loses
    assert outcome.metrics["auroc"] == 1.0


def latent_examples() -> LatentExamples:
    test = [example(i, True, width=8) for i in range(4)]
    negatives = [example(10 + i, False, width=8) for i in range(4)]
    return LatentExamples("h", 3, 50, 2.0, test=test, test_negatives=negatives)


@pytest.mark.parametrize("name", [n for n, s in SCORERS.items() if s.phase in LLM_PHASES])
def test_every_llm_scorer_builds_requests_and_survives_a_dead_server(name):
    """Every registered LLM scorer: its task asks something, and when every request fails it records an
    error instead of a score (never a crash, never a number)."""
    config = config_from_dict({"model": {"path": "m"}, "sparse_coder": {"path": "c"}})
    target = Target(name, None, "h", 3, "an explanation", 3)
    task = SCORERS[name].task(TaskInputs(config, target, latent_examples(), Texts()))
    assert task.requests
    outcome = task.finish([LLMError("connection refused")] * len(task.requests))
    assert outcome.error and "every example failed" in outcome.error
    headline = SCORERS[name].headline
    assert outcome.metrics.get(headline) is None
