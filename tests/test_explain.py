"""The explain stage end to end against a real HTTP server on loopback: records, failures, resume, shards."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import write_config
from full_records import full_records
from openai_stub import StubServer

from autointerp.cache import CacheReader, run_cache
from autointerp.config import load_config
from autointerp.errors import UserError
from autointerp.explain import run_explain
from autointerp.rundir import ShardSpec, cache_dir

EXPLAIN_SECTIONS = {
    "latents": {"sample": 12, "min_activations": 30},
    "examples": {"window": 8, "n_explain": 6, "n_test": 10, "n_negative": 10, "n_explain_negative": 3},
    "explainer": {
        "backend": "openai",
        "model": "stub-model",
        "base_url": "http://unused",
        "max_concurrency": 4,
    },
}


@pytest.fixture(scope="module")
def cached_run(tmp_path_factory, tiny_model_dir, sparsify_coders_dir) -> Path:
    """A finished cache of the tiny model (96-latent TopK coders), reused by every test here."""
    root = tmp_path_factory.mktemp("explain-cache")
    config = write_config(root / "config.yaml", tiny_model_dir, sparsify_coders_dir, **EXPLAIN_SECTIONS)
    run_cache(load_config(config))
    return root


@pytest.fixture
def run(tmp_path, cached_run) -> Path:
    """A private copy of the cached run and its config."""
    shutil.copytree(cached_run / "run", tmp_path / "run")
    data = yaml.safe_load((cached_run / "config.yaml").read_text())
    data["out_dir"] = str(tmp_path / "run")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    return tmp_path / "config.yaml"


def explain(config_path: Path, stub: StubServer, *overrides: str, **kwargs):
    config = load_config(config_path, [f"explainer.base_url={stub.base_url}", *overrides])
    return config, run_explain(config, **kwargs)


def answer_with_example_count(messages: list[dict]) -> str:
    user = messages[-1]["content"]
    return f"Thinking...\n[EXPLANATION]: pattern seen in {user.count('<<')} highlighted spans"


def test_one_record_per_selected_latent_and_resume_costs_nothing(run):
    with StubServer(answer_with_example_count) as stub:
        config, report = explain(run, stub)
        calls = stub.calls
        _, again = explain(run, stub)
        assert stub.calls == calls, "a finished run must not call the LLM again"
    for hookpoint in ("layers.1", "layers.0.mlp"):
        records = full_records(config.run_dir / "explanations", hookpoint)
        eligible = eligible_latents(config, hookpoint)
        tally = report.tallies[hookpoint]
        assert set(records) <= eligible and len(records) == min(12, len(eligible))
        if len(eligible) < 12:  # the sample walked every latent and reports those it passed over
            assert tally.not_eligible == CacheReader(cache_dir(config.run_dir, hookpoint)).num_latents - len(
                eligible
            )
        assert tally.explained + tally.skipped + tally.failed == len(records)
        assert again.tallies[hookpoint].already_done == len(records)
        explained = [r for r in records.values() if r["explanation"]]
        assert explained and len(explained) == tally.explained
        for record in explained:
            assert record["explanation"].startswith("pattern seen in ")
            assert record["error"] is None and record["skipped"] is None
            assert len(record["examples"]["explain"]) == 6
            assert record["usage"]["prompt_tokens"] > 0 and record["usage"]["cached_tokens"] > 0
            assert record["explainer"]["model"] == "stub-model"
    stats = json.loads((config.run_dir / "explanations" / "stats.json").read_text())
    assert stats["hookpoints"]["layers.1"]["cached_token_fraction"] > 0


def test_rare_latents_are_listed_as_skipped(run):
    with StubServer(answer_with_example_count) as stub:
        config, report = explain(run, stub, "latents.min_activations=100000", "latents.indices=0:5")
    records = full_records(config.run_dir / "explanations", "layers.1")
    assert sorted(records) == [0, 1, 2, 3, 4]
    assert all(
        r["explanation"] is None and "too few activating windows" in r["skipped"] for r in records.values()
    )
    assert report.tallies["layers.1"].skipped == 5 and stub.calls == 0


def test_failures_are_recorded_never_turned_into_explanations(run):
    def flaky(messages: list[dict]) -> str:
        return "I cannot tell." if messages[-1]["content"].count("Example") % 2 else "[EXPLANATION]: ok"

    with StubServer(flaky) as stub:
        config, report = explain(run, stub)
    records = full_records(config.run_dir / "explanations", "layers.1")
    failed = [r for r in records.values() if r["error"]]
    assert len(failed) == report.tallies["layers.1"].failed
    for record in failed:
        assert record["explanation"] is None and "unparseable" in record["error"]
        assert record["answer"] == "I cannot tell."


def test_contrastive_prompt_shows_the_explainers_own_negatives(run):
    prompts: list[str] = []

    def capture(messages: list[dict]) -> str:
        prompts.append(messages[-1]["content"])
        return "[EXPLANATION]: x"

    with StubServer(capture) as stub:
        config, _ = explain(run, stub, "explainer.kind=contrastive", "latents.indices=[3]")
    assert "not active" in prompts[0] and prompts[0].count("<<") >= 6
    record = full_records(config.run_dir / "explanations", "layers.1")[3]
    assert len(record["examples"]["explain_negatives"]) == 3


def test_shards_split_latents_and_merge_on_read(run):
    with StubServer(answer_with_example_count) as stub:
        config, _ = explain(run, stub, shard=ShardSpec(0, 2))
        explain(run, stub, shard=ShardSpec(1, 2))
        out = config.run_dir / "explanations"
        parts = [read_records_file(out / f"layers.1.shard-{i}-of-2.jsonl") for i in range(2)]
        n = min(12, len(eligible_latents(config, "layers.1")))
        assert not set(parts[0]) & set(parts[1]) and len(parts[0]) + len(parts[1]) == n
        _, whole = explain(run, stub)
        assert whole.tallies["layers.1"].already_done == n


def eligible_latents(config, hookpoint: str) -> set[int]:
    """Latents with at least `min_activations` activating windows, counted cell by cell."""
    reader = CacheReader(cache_dir(config.run_dir, hookpoint))
    width = config.examples.window
    assert reader.ctx_len % width == 0  # so the cells are global token index // width
    eligible = set()
    for latent in range(reader.num_latents):
        cells = {i // width for i in reader.latent(latent).token_index.tolist()}
        if len(cells) >= config.latents.min_activations:
            eligible.add(latent)
    return eligible


def read_records_file(path: Path) -> list[int]:
    return [json.loads(line)["latent"] for line in path.read_text().splitlines()]


def test_changed_config_is_refused_unless_forced(run):
    with StubServer(answer_with_example_count) as stub:
        explain(run, stub)
        with pytest.raises(UserError, match="explainer.max_tokens"):
            explain(run, stub, "explainer.max_tokens=50")
        _, report = explain(run, stub, "explainer.max_tokens=50", force=True)
    assert report.tallies["layers.1"].already_done == 0


def test_backend_auto_resolved_differently_elsewhere_keeps_the_explanations(run, auto_backend):
    """Explanations made with `auto` on a machine with vLLM are neither refused nor redone on one without;
    each record says which backend answered."""
    with StubServer(answer_with_example_count) as stub:
        auto_backend(True)
        config, first = explain(run, stub, "explainer.backend=auto")
        calls = stub.calls
        auto_backend(False)
        _, second = explain(run, stub, "explainer.backend=auto")
        assert stub.calls == calls
    for hookpoint, tally in second.tallies.items():
        assert (tally.explained, tally.failed) == (0, 0)
        done = first.tallies[hookpoint]
        assert tally.already_done == done.explained + done.skipped and done.explained > 0
        records = full_records(config.run_dir / "explanations", hookpoint).values()
        assert {(r["explainer"]["backend"], r["config_key"]["explainer"]["backend"]) for r in records} == {
            ("vllm", "auto")
        }


def test_records_of_earlier_versions_with_auto_resolved_stay_valid_where_it_resolves_alike(run, auto_backend):
    """Earlier versions wrote the backend `auto` resolved to into the key: such records count as made with
    `auto` on a machine that resolves it the same way."""
    from autointerp.rundir import config_hash

    with StubServer(answer_with_example_count) as stub:
        auto_backend(True)
        config, _ = explain(run, stub, "explainer.backend=auto")
        for path in (config.run_dir / "explanations").glob("*.jsonl"):
            records = [json.loads(line) for line in path.read_text().splitlines()]
            for record in records:
                record["config_key"]["explainer"]["backend"] = "vllm"
                record["config_hash"] = config_hash(record["config_key"])
            path.write_text("".join(json.dumps(record) + "\n" for record in records))
        calls = stub.calls
        _, again = explain(run, stub, "explainer.backend=auto")
        assert stub.calls == calls and all(t.explained == 0 for t in again.tallies.values())
        auto_backend(False)
        with pytest.raises(UserError, match="explainer.backend changed"):
            explain(run, stub, "explainer.backend=auto")


@pytest.mark.slow
def test_kill_9_mid_stage_resumes_without_duplicates_or_losses(run):
    def slow(messages: list[dict]) -> str:
        time.sleep(0.3)
        return "[EXPLANATION]: slow"

    with StubServer(slow) as stub:
        command = [
            sys.executable,
            "-m",
            "autointerp",
            "explain",
            str(run),
            "--set",
            f"explainer.base_url={stub.base_url}",
        ]
        out = Path(yaml.safe_load(run.read_text())["out_dir"]) / "explanations"
        process = subprocess.Popen([*command, "--set", "explainer.max_concurrency=1"], stderr=subprocess.PIPE)
        deadline = time.time() + 120
        while time.time() < deadline and process.poll() is None and _lines(out / "layers.1.jsonl") < 3:
            time.sleep(0.05)
        assert process.poll() is None, process.stderr.read().decode()
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert _lines(out / "layers.1.jsonl") < 12
        resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr
    for hookpoint in ("layers.1", "layers.0.mlp"):
        latents = read_records_file(out / f"{hookpoint}.jsonl")
        assert (
            len(latents) == len(set(latents)) == min(12, len(eligible_latents(load_config(run), hookpoint)))
        )


def _lines(path: Path) -> int:
    return path.read_text().count("\n") if path.is_file() else 0


def test_unreachable_server_is_one_clear_error(run):
    stub = StubServer(answer_with_example_count)  # bound but never started: connections hang up
    stub.server.server_close()
    settings = [f"explainer.base_url={stub.base_url}", "explainer.max_retries=1", "explainer.ready_timeout=0"]
    config = load_config(run, settings)
    with pytest.raises(UserError, match="reach"):
        run_explain(config)


@pytest.mark.parametrize("negatives", ["neighbours", "similar"])
def test_neighbour_and_similar_negatives_reach_the_contrastive_prompt(run, negatives):
    with StubServer(answer_with_example_count) as stub:
        config, report = explain(
            run,
            stub,
            "explainer.kind=contrastive",
            f"examples.negatives={negatives}",
            "latents.indices=[3, 7]",
        )
    records = full_records(config.run_dir / "explanations", "layers.1")
    for record in records.values():
        if record["skipped"]:
            continue
        assert record["explanation"]
        negatives_shown = record["examples"]["explain_negatives"]
        assert len(negatives_shown) == 3
        assert all(max(example["activations"]) == 0 for example in negatives_shown)


def test_without_reasoning_the_answer_is_prefilled_and_one_line(run):
    seen: list[list[dict]] = []

    def complete_the_prefill(messages: list[dict]) -> str:
        seen.append(messages)
        return " Closing brackets of function calls"

    with StubServer(complete_the_prefill) as stub:
        config, report = explain(run, stub, "explainer.reasoning=false", "latents.indices=[3]")
    assert seen[0][-1] == {"role": "assistant", "content": "[EXPLANATION]:"}
    assert all(m["content"].startswith("[EXPLANATION]:") for m in seen[0] if m["role"] == "assistant")
    record = full_records(config.run_dir / "explanations", "layers.1")[3]
    assert record["explanation"] == "Closing brackets of function calls"
