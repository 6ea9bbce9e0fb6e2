"""The tables the config mirrors (scorers, coder formats, LLM backends), and a scorer added through the
registry alone: no edit to the score stage, summary or metrics."""

from __future__ import annotations

import dataclasses
import threading
import time
import typing
from collections.abc import Iterator

import pytest
from openai_stub import StubServer
from test_score import HP, explained_run, run, stub_overrides  # noqa: F401 - fixtures
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.coders import FORMATS
from autointerp.config import FORMATS_WITHOUT_PATH, CoderFormat, LLMBackend, ScorerName, load_config
from autointerp.llm import BACKENDS, LLMRequest, Message, SamplingParams
from autointerp.records import read_records
from autointerp.rundir import SCORES_DIR
from autointerp.score import run_score, write_summary
from autointerp.score.base import Outcome, Result, ScoringTask
from autointerp.score.registry import PHASES, SCORERS, Scorer, register


def test_config_names_equal_the_tables():
    assert list(typing.get_args(ScorerName)) == list(SCORERS)
    assert set(typing.get_args(CoderFormat)) == set(FORMATS) | {"auto"}
    assert set(FORMATS_WITHOUT_PATH) == {name for name, fmt in FORMATS.items() if fmt.detect is None}
    assert set(typing.get_args(LLMBackend)) == set(BACKENDS) | {"auto"}


def test_every_scorer_is_complete():
    config = load_config_defaults()
    for scorer in SCORERS.values():
        assert scorer.phase in PHASES
        assert scorer.chance(scorer.headline, 0.5, config) is not None, scorer.name
        assert isinstance(scorer.settings(config), dict)
        assert scorer.pooled([]) is not None


def test_duplicate_or_incomplete_scorers_are_refused():
    with pytest.raises(ValueError, match="already registered"):
        register(Scorer("detection", "balanced_accuracy", "scorer_llm", task=lambda inputs: None))
    with pytest.raises(ValueError, match="builds no task"):
        register(Scorer("no-task", "x", "scorer_llm"))
    with pytest.raises(ValueError, match="no embed function"):
        register(Scorer("no-embed", "x", "embedding"))
    assert "no-task" not in SCORERS and "no-embed" not in SCORERS


def load_config_defaults():
    from autointerp.config import config_from_dict

    return config_from_dict({"model": {"path": "m"}, "sparse_coder": {"path": "c"}})


class EchoTask(ScoringTask):
    """A toy: asks the LLM to repeat the explanation; scores 1 when it does."""

    def __init__(self, explanation: str):
        self.explanation = explanation
        prompt = f"Repeat exactly: {explanation}"
        self.requests = [LLMRequest((Message("user", prompt),), SamplingParams(max_tokens=20))]

    def finish(self, results: list[Result]) -> Outcome:
        (result,) = results
        echoed = getattr(result, "text", "").strip() == self.explanation
        return Outcome({"echo": float(echoed), "n_examples": 1}, [{"answer": getattr(result, "text", None)}])


@pytest.fixture
def echo_scorer() -> Iterator[Scorer]:
    scorer = register(
        Scorer(
            "echo",
            "echo",
            "scorer_llm",
            task=lambda inputs: EchoTask(inputs.explanation),
            chance=lambda metric, positive, config: 0.0,
        )
    )
    yield scorer
    del SCORERS["echo"]


def echo(messages: list[dict]) -> str:
    content = messages[-1]["content"]
    if content.startswith("Repeat exactly: "):
        return content.removeprefix("Repeat exactly: ")
    return "0"


def test_a_scorer_added_through_the_registry_alone_scores_a_run(run, echo_scorer):  # noqa: F811
    """Only the config's name check (the `ScorerName` Literal) stands outside the registry; replacing the
    loaded config's scorers stands in for that one word."""
    with StubServer(echo) as stub:
        config = dataclasses.replace(load_config(run, stub_overrides(stub)), scorers=("echo",))
        report = run_score(config)
    records = read_records(config.run_dir / SCORES_DIR / "echo", HP)
    explained = [r for r in records.values() if r["explanation"]]
    assert explained and all(r["score"] == 1.0 for r in explained)
    assert report.tallies[("echo", HP)].scored == len(explained)
    summary = write_summary(config, config.run_dir / SCORES_DIR)["scorers"]["echo"][HP]
    assert summary["headline"] == "echo" and summary["metrics"]["echo"]["mean"] == 1.0
    assert summary["metrics"]["echo"]["chance"] == 0.0


class PeakCounter:
    """A stub answer that holds each request a moment and records the most in flight at once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.now = self.peak = 0

    def __call__(self, messages: list[dict]) -> str:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        time.sleep(0.03)
        with self.lock:
            self.now -= 1
        return "1"


def test_scorer_max_concurrency_reaches_the_scorer_client(run):  # noqa: F811
    counter = PeakCounter()
    with StubServer(counter) as stub:
        args = [a for o in stub_overrides(stub, "scorers=[detection]") for a in ("--set", o)]
        result = CliRunner().invoke(app, ["score", str(run), *args, "--set", "scorer.max_concurrency=3"])
    assert result.exit_code == 0, result.output
    assert counter.peak == 3, "explainer.max_concurrency is 4 in this config: the scorer's own 3 must rule"


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("scorer.base_url=localhost:8000", "scorer.base_url"),
        ("scorer.max_concurrency=0", "scorer.max_concurrency"),
        ("scorer.timeout=-1", "scorer.timeout"),
        ("surprisal.backend=openai", "surprisal.base_url"),
        ("surprisal.gpu_memory_utilization=2", "surprisal.gpu_memory_utilization"),
    ],
)
def test_bad_role_settings_are_one_error_at_load_naming_the_section(run, override, key):  # noqa: F811
    local = ["explainer.backend=transformers", "explainer.base_url=null"]
    args = [a for o in [*local, override] for a in ("--set", o)]
    result = CliRunner().invoke(app, ["score", str(run), *args])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {key}:"), result.output


def test_role_settings_fall_back_role_by_role(run):  # noqa: F811
    config = load_config(
        run,
        [
            "explainer.max_concurrency=7",
            "explainer.timeout=11",
            "scorer.max_retries=2",
            "scorer.model=judge",
            "surprisal.backend=openai",
            "surprisal.max_concurrency=5",
        ],
    )
    scorer, surprisal = config.scorer_llm, config.surprisal_llm
    assert (scorer.section, scorer.model, scorer.max_concurrency) == ("scorer", "judge", 7)
    assert (scorer.timeout, scorer.max_retries, scorer.base_url) == (11, 2, "http://unused")
    assert surprisal.section == "surprisal" and surprisal.model == config.model.path
    assert (surprisal.max_concurrency, surprisal.max_retries, surprisal.timeout) == (5, 2, 11)
    assert surprisal.base_url == "http://unused", "same backend as the scorer: its endpoint"


def test_a_missing_scorer_model_names_the_scorer_section(run):  # noqa: F811
    from autointerp.errors import ConfigError
    from autointerp.llm import make_client

    config = load_config(run, ["explainer.model=null", "scorer.backend=transformers"])
    with pytest.raises(ConfigError, match=r"scorer\.model: is required \(or explainer\.model\)"):
        make_client(config.scorer_llm)


def test_fuzzing_warns_of_the_centred_highlight_tell():
    from autointerp.config import config_from_dict

    base = {"model": {"path": "m"}, "sparse_coder": {"path": "c", "hookpoints": ["h"]}}
    leaky = config_from_dict({**base, "preset": "saebench", "scorers": ["saebench", "fuzzing"]})
    assert SCORERS["fuzzing"].warnings(leaky) and "leaks the label" in SCORERS["fuzzing"].warnings(leaky)[0]
    assert not SCORERS["fuzzing"].warnings(config_from_dict(base))


def test_the_saebench_export_checks_every_protocol_value_of_the_preset():
    from autointerp.interop.export_saebench import PROTOCOL, RUN_SIZE_KEYS
    from autointerp.presets import PRESETS

    checked = {r.key for r in PROTOCOL}
    assert checked == {item.key for item in PRESETS["saebench"]} - RUN_SIZE_KEYS


def test_surprisal_warns_when_the_subject_model_reads_the_excerpts():
    from autointerp.config import config_from_dict

    base = {"model": {"path": "m"}, "sparse_coder": {"path": "c", "hookpoints": ["h"]}}
    assert "surprisal.model is not set" in SCORERS["surprisal"].warnings(config_from_dict(base))[0]
    chosen = config_from_dict({**base, "surprisal": {"model": "meta-llama/Llama-3.1-70B"}})
    assert SCORERS["surprisal"].warnings(chosen) == []
