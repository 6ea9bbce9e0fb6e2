"""Scorer logic on hand-built LLM responses: tasks, answer parsing, simulation, surprisal, intruder.

Milliseconds each; the real-model test only has to show that the pieces run together.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

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
    """Prompt logprobs of a prefilled reply: `tok<TAB>`, then an `unknown` whose digit mass averages
    `values[i]`."""
    positions: list[TokenLogprob | None] = [None, TokenLogprob("Excerpt", -1.0)]
    for value in values:
        positions += [TokenLogprob("tok\t", -0.5), value_position(value, "unknown"), TokenLogprob("\n", -0.1)]
    return LLMResponse("", prompt_logprobs=positions)


def value_position(value: float, token: str) -> TokenLogprob:
    """A prompt position holding `token` whose top alternatives put the mass of `value` on two digits."""
    low, high = math.floor(value), math.ceil(value)
    weight = value - low
    top = {str(low): math.log(1 - weight + 1e-9)} | ({str(high): math.log(weight)} if high != low else {})
    return TokenLogprob(token, -1.0, top)


def copying_model_logprobs(reply: str, truth: list[float]) -> LLMResponse:
    """A stub LM reading a prefilled simulation reply: at each value position it copies the previous line's
    value when that is a digit, else it guesses the truth. Placeholder tokens are split as `\t`, `unknown`."""
    positions: list[TokenLogprob | None] = [None]
    previous: str | None = None
    for line, true in zip(reply.split("\n"), truth, strict=True):
        token, value = line.rsplit("\t", 1)
        guess = float(previous) if previous is not None and previous.isdigit() else true
        positions += [TokenLogprob(token, -1.0), TokenLogprob("\t", -0.1), value_position(guess, value)]
        positions.append(TokenLogprob("\n", -0.1))
        previous = value
    return LLMResponse("", prompt_logprobs=positions)


def test_simulation_placeholders_carry_no_value_to_copy():
    """Bills et al.'s placeholder: with `0` on every line a copying model predicts 0 throughout (r collapses);
    with `unknown` it has nothing to copy. Demonstrations with true activations come first."""
    from autointerp.score.prompts import simulation_messages

    pieces = ["We", " saw", " rain", " and", " more", " rain", " today"]
    truth = [0.0, 0.0, 9.0, 0.0, 0.0, 8.0, 0.0]
    messages = simulation_messages("rain", pieces, placeholders=True)
    assert [m.role for m in messages][:5] == ["system", "user", "assistant", "user", "assistant"]
    assert any(line.endswith("\t9") for line in messages[2].content.splitlines()), "real values shown"
    reply = messages[-1].content
    assert all(line.endswith("\tunknown") for line in reply.splitlines())
    predicted = placeholder_predictions(copying_model_logprobs(reply, truth), len(pieces))
    assert np.corrcoef(predicted, truth)[0, 1] == pytest.approx(1.0, abs=1e-3)
    zeros = "\n".join(line.replace("\tunknown", "\t0") for line in reply.splitlines())
    value_positions = copying_model_logprobs(zeros, truth).prompt_logprobs[3::4]
    copied = [sum(int(d) * math.exp(lp) for d, lp in p.top.items()) for p in value_positions]
    assert copied == pytest.approx([0.0] * len(pieces)), "with fake zeros a copying model predicts only 0"


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


def test_text_answers_get_no_probability_and_failures_are_counted_per_class():
    """A digit read from the text (not in the top logprobs) is a prediction without a probability, so it
    cannot tie in the AUROC; failures are counted for positives and negatives apart."""
    labels = [1] * 11 + [0] * 12
    task = ClassificationTask("detection", "e", items(labels), 1, np.random.default_rng(0), 64)
    p_one = [0.9 - 0.05 * i for i in range(11)] + [0.1 + 0.05 * i for i in range(12)]
    results = [answer(p) for p in p_one]
    results[1], results[15] = LLMResponse("1"), LLMError("down")
    outcome = task.finish(results)
    assert [e["probability"] for e in outcome.examples][:2] == [pytest.approx(0.9), None]
    assert outcome.examples[1]["prediction"] == 1
    metrics = outcome.metrics
    assert metrics["n_text_answers"] == 1
    assert (metrics["n_failed_positive"], metrics["n_failed_negative"]) == (0, 1)
    soft = [i for i in range(len(labels)) if i not in (1, 15)]
    expected = roc_auc_score([labels[i] for i in soft], [p_one[i] for i in soft])
    assert metrics["auroc"] == pytest.approx(expected)


def test_pooled_simulation_correlation_is_scale_free_across_latents():
    from autointerp.score.pooled import pooled_pearson

    def latent(scale: float) -> list[dict]:
        truth = np.array([0.0, 1.0, 0.5, 0.0])
        return [{"activations": (truth * scale).tolist(), "predicted": (truth * 9).tolist()}]

    assert pooled_pearson([latent(1.0), latent(1000.0)])["pearson"] == pytest.approx(1.0)


def test_intruder_probability_has_the_same_chance_as_its_accuracy():
    config = config_from_dict(
        {"model": {"path": "m"}, "sparse_coder": {"path": "c"}, "scorer": {"intruder_size": 4}}
    )
    intruder = SCORERS["intruder"]
    assert (
        intruder.chance("mean_probability", 0.5, config) == intruder.chance("accuracy", 0.5, config) == 0.25
    )


def test_the_explanation_is_embedded_as_a_query_with_the_models_query_prompt():
    from autointerp.embedding import Embedder
    from autointerp.score.embedding import embedding_outcome

    embed = Embedder()
    scored = items([1, 0, 1, 0])
    documents = embed([item.shown for item in scored])
    embed.model.prompts = {"query": "query: ", "document": ""}  # as e5-style models define them
    values = [e["value"] for e in embedding_outcome(embed, "rain words", scored).examples]
    assert values == pytest.approx((documents @ embed(["query: rain words"])[0]).tolist(), abs=1e-5)
    configured = [e["value"] for e in embedding_outcome(embed, "rain words", scored, "find: ").examples]
    assert configured == pytest.approx((documents @ embed(["find: rain words"])[0]).tolist(), abs=1e-5)
    assert values != pytest.approx((documents @ embed(["rain words"])[0]).tolist(), abs=1e-5)


def random_response(request, rng: np.random.Generator) -> LLMResponse:
    """What a scorer that ignores its input says: random digit probabilities at every position it is
    asked about (the answer token, and each prompt token when prompt logprobs are asked for)."""

    def position(token: str) -> TokenLogprob:
        mass = rng.dirichlet(np.ones(10))
        top = {str(d): math.log(p) for d, p in enumerate(mass)}
        return TokenLogprob(token, math.log(rng.uniform(0.01, 1.0)), top)

    first = position("x")
    first = TokenLogprob(max(first.top, key=first.top.get), 0.0, first.top)
    prompt = None
    if request.params.prompt_logprobs is not None:
        text = "".join(m.content for m in request.messages)
        tokens = re.findall(r"\t|\n|[^\s]+|[ ]+", text)
        # random alternatives only after a tab (where values are read); elsewhere a random logprob
        prompt = [None] + [
            position(t) if previous == "\t" else TokenLogprob(t, math.log(rng.uniform(0.01, 1.0)))
            for previous, t in zip(["", *tokens], tokens, strict=False)
        ]
    return LLMResponse(first.token, logprobs=[first], prompt_logprobs=prompt)


@pytest.mark.parametrize("name", [n for n, s in SCORERS.items() if s.phase in LLM_PHASES])
def test_a_scorer_that_ignores_its_input_scores_chance(name):
    """Every registered LLM scorer, answered at random for 200 latents: its headline averages to the
    chance level its registry entry states (within 4 standard errors)."""
    config = config_from_dict({"model": {"path": "m"}, "sparse_coder": {"path": "c"}})
    scorer, rng = SCORERS[name], np.random.default_rng(7)
    headlines = []
    for latent in range(200):
        examples = latent_examples()
        target = Target(name, None, "h", latent, "an explanation", latent)
        task = scorer.task(TaskInputs(config, target, examples, Texts()))
        outcome = task.finish([random_response(request, rng) for request in task.requests])
        headlines.append(outcome.metrics[scorer.headline])
    positive = np.mean([e.label for e in latent_task_items(name, config)])
    chance = scorer.chance(scorer.headline, positive, config)
    values = np.array([h for h in headlines if h is not None])
    assert len(values) > 150
    standard_error = values.std(ddof=1) / np.sqrt(len(values))
    if name == "saebench":  # its chance is the best answer that ignores the input ("None"); others do worse
        assert values.mean() < chance + 4 * standard_error
    else:
        assert abs(values.mean() - chance) < 4 * standard_error + 0.005


def latent_task_items(name: str, config) -> list:
    """The labelled items one latent's task scores (for its positive fraction)."""
    task = SCORERS[name].task(
        TaskInputs(config, Target(name, None, "h", 0, "e", 0), latent_examples(), Texts())
    )
    return getattr(task, "items", None) or [item for trial in task.trials for item in trial.items]


def test_saebench_scoring_lists_indices_and_scores_the_fraction_right():
    from autointerp.score.saebench import SAEBenchTask

    task = SAEBenchTask("rain words", items([1, 1, 0, 0, 0, 0]), Texts(), np.random.default_rng(3))
    (request,) = task.requests
    assert "this neuron fires on rain words." in request.messages[1].content
    positives = [i for i, item in enumerate(task.items, start=1) if item.label == 1]
    right = task.finish([LLMResponse(", ".join(map(str, positives)))])
    assert right.metrics["score"] == 1.0 and right.error is None
    none = SAEBenchTask("x", items([1, 1, 0, 0, 0, 0]), Texts(), np.random.default_rng(3)).finish(
        [LLMResponse("None")]
    )
    assert none.metrics["score"] == pytest.approx(4 / 6), "answering None classifies the negatives right"
    assert SCORERS["saebench"].chance("score", 2 / 6, None) == pytest.approx(4 / 6)
    unreadable = SAEBenchTask("x", items([1, 0]), Texts(), np.random.default_rng(3)).finish(
        [LLMResponse("maybe the first")]
    )
    assert unreadable.error and unreadable.metrics["score"] is None


def test_saebench_prompts_are_saebenchs_own():
    """The explainer and scorer prompts, rendered for the same inputs, equal those in SAEBench's source."""
    import ast
    import importlib.util
    from types import SimpleNamespace

    from autointerp import saebench_protocol as protocol

    spec = importlib.util.find_spec("sae_bench")
    if spec is None or spec.submodule_search_locations is None:
        pytest.skip("sae-bench is not installed")
    source = Path(spec.submodule_search_locations[0], "evals", "autointerp", "main.py").read_text()
    functions = {f.name: f for f in ast.walk(ast.parse(source)) if isinstance(f, ast.FunctionDef)}

    def prompt(function: str, name: str, env: dict) -> str:
        parts = [
            node.value
            for node in ast.walk(functions[function])
            if isinstance(node, (ast.Assign, ast.AugAssign))
            and getattr(node.targets[0] if isinstance(node, ast.Assign) else node.target, "id", "") == name
        ]
        # the generation prompt adds its demos in an `if use_demos_in_explanation` branch (the default)
        return "".join(eval(compile(ast.Expression(p), "<saebench>", "eval"), env) for p in parts[:2])

    documents = ["a <<b>> c", "d <<e>>"]
    env = {"self": SimpleNamespace(cfg=SimpleNamespace(n_ex_for_scoring=2)), "example_response_str": "1"}
    generation = protocol.generation_messages(documents)
    assert generation[0].content == prompt("get_generation_prompts", "SYSTEM_PROMPT", env)
    assert generation[1].content == prompt(
        "get_generation_prompts", "USER_PROMPT", env | {"examples_as_str": "1. a <<b>> c\n2. d <<e>>"}
    )
    scoring = protocol.scoring_messages("x", ["a", "b"], 1, seed=0)
    example = scoring[0].content.split('might look like "')[1].split('"')[0]
    env["example_response_str"] = example
    assert scoring[0].content == prompt("get_scoring_prompts", "SYSTEM_PROMPT", env)
    assert protocol.parse_predictions("1, 3 and 4.") == [1, 3, 4] and protocol.parse_predictions("None") == []
    assert protocol.parse_explanation("This neuron activates on rain words.") == "rain words"


def test_intruder_trials_draw_each_trial_from_one_quantile():
    """Each trial's activating excerpts share an activation quantile (accuracy is reported per quantile)."""
    from autointerp.score.items import intruder_trials

    test = [
        Example(
            i, 0, np.arange(1, 9, dtype=np.int32), np.eye(8, dtype=np.float32)[i % 8] * (1 + i // 10), i // 10
        )
        for i in range(30)
    ]
    negatives = [example(100 + i, False, width=8) for i in range(10)]
    examples = LatentExamples("h", 0, 50, 3.0, test=test, test_negatives=negatives)
    trials = intruder_trials(examples, Texts(), 5, np.random.default_rng(0))
    # 10 excerpts per quantile give two trials of 4 each; the 2 left of each quantile make one mixed trial
    assert [t.quantile for t in trials] == [0, 0, 1, 1, 2, 2, None]
    for trial in trials[:-1]:
        quantiles = {item.example.quantile for item in trial.items if item.label == 0}
        assert quantiles == {trial.quantile}
    task = IntruderTask(trials)
    outcome = task.finish([digits_answer({str(d): 0.2 for d in range(1, 6)}) for _ in trials])
    assert {f"accuracy_quantile_{q}" for q in range(3)} <= set(outcome.metrics)
