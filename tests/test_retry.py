"""Failed work is retried: a run through a server that fails for its first half and then recovers, rerun
once, ends exactly where a run against a healthy server ends."""

from __future__ import annotations

import shutil
import threading
import zlib
from pathlib import Path

import pytest
import yaml
from conftest import write_config
from full_records import full_records
from openai_stub import StubServer
from test_score import SECTIONS, answers_by_hash, explanation_for

from autointerp.cache import run_cache
from autointerp.config import load_config
from autointerp.explain import run_explain
from autointerp.rundir import EXPLANATIONS_DIR, SCORES_DIR
from autointerp.score import run_score

HP = "layers.0.mlp"


@pytest.fixture(scope="module")
def cached_run(tmp_path_factory, tiny_model_dir, sparsify_coders_dir) -> Path:
    root = tmp_path_factory.mktemp("retry-run")
    config_path = write_config(root / "config.yaml", tiny_model_dir, sparsify_coders_dir, **SECTIONS)
    run_cache(load_config(config_path))
    return root


def copy_run(cached_run: Path, target: Path) -> Path:
    shutil.copytree(cached_run / "run", target / "run")
    data = yaml.safe_load((cached_run / "config.yaml").read_text())
    data["out_dir"] = str(target / "run")
    (target / "config.yaml").write_text(yaml.safe_dump(data))
    return target / "config.yaml"


def answer(messages: list[dict]) -> str:
    """The explainer's or the scorer's fixed answer."""
    return explanation_for(messages) if "latent" in messages[0]["content"] else answers_by_hash(messages)


class Flaky:
    """A server that is down for half of the explainer's requests and the first scorer requests, until
    `down` is cleared: it drops those connections."""

    def __init__(self, scorer_failures: int):
        self.down, self.scorer_failures, self.lock = True, scorer_failures, threading.Lock()

    def __call__(self, messages: list[dict]) -> str:
        explainer = "latent" in messages[0]["content"]
        with self.lock:
            failing = self.down and (
                zlib.crc32("".join(m["content"] for m in messages).encode()) % 2 == 0
                if explainer
                else self.scorer_failures > 0
            )
            if failing and not explainer:
                self.scorer_failures -= 1
        if failing:
            raise ConnectionAbortedError("server down")
        return answer(messages)


def run_all(config_path: Path, stub: StubServer) -> tuple:
    overrides = [
        f"explainer.base_url={stub.base_url}",
        "explainer.max_retries=0",
        "scorers=[detection]",
        "scorer.max_retries=0",
    ]
    config = load_config(config_path, overrides)
    return config, run_explain(config), run_score(config)


def outcomes(config) -> tuple[dict, dict]:
    explained = full_records(config.run_dir / EXPLANATIONS_DIR, HP)
    scored = full_records(config.run_dir / SCORES_DIR / "detection", HP)
    return (
        {k: (r["explanation"], r["error"]) for k, r in explained.items()},
        {k: (r["score"], r["error"], [e["prediction"] for e in r["examples"]]) for k, r in scored.items()},
    )


def test_a_server_that_fails_then_recovers_ends_like_a_healthy_one(cached_run, tmp_path):
    with StubServer(answer) as healthy:
        config, _, _ = run_all(copy_run(cached_run, tmp_path / "healthy"), healthy)
    expected = outcomes(config)
    assert all(error is None for _, error in expected[0].values())

    flaky = Flaky(scorer_failures=10)
    with StubServer(flaky) as server:
        flaky_path = copy_run(cached_run, tmp_path / "flaky")
        config, explained, scored = run_all(flaky_path, server)
        explain_records = full_records(config.run_dir / EXPLANATIONS_DIR, HP)
        failed = [r for r in explain_records.values() if r["error"]]
        assert failed and len(failed) < len(explain_records), "some explanations failed, some did not"
        assert {r["error_kind"] for r in failed} == {"transient"}
        score_records = full_records(config.run_dir / SCORES_DIR / "detection", HP)
        assert any((r["failures"] or {}).get("transient") for r in score_records.values())
        flaky.down = False  # the server is back for the rerun
        config, explained, scored = run_all(flaky_path, server)
    assert sum(t.retried for t in explained.tallies.values()) == sum(
        1 for hp in ("layers.1", HP) for r in full_records(config.run_dir / EXPLANATIONS_DIR, hp).values()
    ) - sum(t.already_done for t in explained.tallies.values())
    assert sum(t.retried for t in scored.tallies.values()) > 0, "latents that lost examples are redone"
    assert outcomes(config) == expected


def test_unreadable_answers_are_retried_only_on_request(cached_run, tmp_path):
    path = copy_run(cached_run, tmp_path / "run")
    with StubServer(lambda messages: "I cannot tell") as garbled:
        config = load_config(path, [f"explainer.base_url={garbled.base_url}"])
        first = run_explain(config)
        assert sum(t.failed for t in first.tallies.values()) > 0
        again = run_explain(config)
        assert sum(t.retried for t in again.tallies.values()) == 0 and garbled.calls > 0
        calls = garbled.calls
        forced = run_explain(config, retry_unparseable=True)
    assert sum(t.retried for t in forced.tallies.values()) == sum(t.failed for t in first.tallies.values())
    assert garbled.calls > calls


def test_score_reads_the_latest_explanation_across_shard_and_whole_files(tmp_path):
    """A latent that failed in an array task (shard file) and was explained by a later whole run: score
    sees the later explanation (the merge rule is `written`, not file order)."""
    from autointerp.records import RecordWriter, records_file
    from autointerp.rundir import ShardSpec
    from autointerp.score.plan import _light_explanations

    folder = tmp_path / "explanations"
    with RecordWriter(records_file(folder, "h", ShardSpec(1, 10))) as writer:
        writer.write({"latent": 3, "explanation": None, "error": "llm error: down", "examples": {}})
    with RecordWriter(records_file(folder, "h", ShardSpec())) as writer:
        writer.write({"latent": 3, "explanation": "digits", "error": None, "examples": {}})
    assert _light_explanations(folder, "h")[3]["explanation"] == "digits"
    with RecordWriter(records_file(folder, "h", ShardSpec(2, 10))) as writer:
        writer.write({"latent": 3, "explanation": "later", "error": None, "examples": {}})
    assert _light_explanations(folder, "h")[3]["explanation"] == "later"
