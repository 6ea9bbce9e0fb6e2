"""The explain command against a faulty server: fatal answers stop it with one line and no failure records,
unreadable answers are per-latent failures and never crash it."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import yaml
from conftest import write_config
from fault_server import FaultServer, blackholed_port, serving
from typer.testing import CliRunner

from autointerp.cache import CacheReader, run_cache
from autointerp.cli import app
from autointerp.config import load_config
from autointerp.records import read_records

SECTIONS = {
    "examples": {"window": 8, "n_explain": 6, "n_test": 4, "n_negative": 4, "n_explain_negative": 3},
    "explainer": {"backend": "openai", "model": "m", "base_url": "http://unused", "max_concurrency": 2},
    "sparse_coder": {"hookpoints": ["layers.1"]},
}


@pytest.fixture(scope="module")
def cached_run(tmp_path_factory, tiny_model_dir, sparsify_coders_dir) -> Path:
    root = tmp_path_factory.mktemp("explain-faults")
    config = write_config(root / "config.yaml", tiny_model_dir, sparsify_coders_dir, **SECTIONS)
    data = yaml.safe_load(config.read_text())
    data["sparse_coder"]["hookpoints"] = ["layers.1"]
    data["latents"] = {"min_activations": 5}
    config.write_text(yaml.safe_dump(data))
    run_cache(load_config(config))
    data["latents"]["indices"] = _scorable_latents(load_config(config), 4)
    config.write_text(yaml.safe_dump(data))
    return root


def _scorable_latents(config, n: int) -> list[int]:
    """The first latents of layers.1 with an explainer view and a held-out set under this config."""
    from autointerp.examples.recipe import example_builder
    from autointerp.texts import TokenTexts, load_tokenizer

    reader = CacheReader(config.run_dir / "cache" / "layers.1")
    builder = example_builder(config, "layers.1", reader, TokenTexts(load_tokenizer(config.model.path)))
    found = [latent for latent in range(reader.num_latents) if not builder.build(latent).skipped]
    assert len(found) >= n
    return found[:n]


@pytest.fixture
def config(tmp_path, cached_run) -> Path:
    shutil.copytree(cached_run / "run", tmp_path / "run")
    data = yaml.safe_load((cached_run / "config.yaml").read_text())
    data["out_dir"] = str(tmp_path / "run")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    return tmp_path / "config.yaml"


def explain(config: Path, url: str, *overrides: str) -> tuple[int, str]:
    settings = [
        f"explainer.base_url={url}",
        "explainer.ready_timeout=0",
        "explainer.max_retries=1",
        *overrides,
    ]
    args = ["explain", str(config), *(a for s in settings for a in ("--set", s))]
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output.strip()


def records(config: Path) -> dict:
    return read_records(load_config(config).run_dir / "explanations", "layers.1")


def test_no_credits_stops_explain_with_one_line_and_no_failure_records(config):
    with serving(FaultServer()) as server:
        server.script = [("status", 402, {}, {"error": {"message": "Insufficient credits"}})] * 50
        code, output = explain(config, server.url)
    assert code == 2 and len(output.splitlines()) == 1 and output.startswith("error: explainer:"), output
    assert "credits" in output and "Traceback" not in output
    assert not any(r.get("error") for r in records(config).values())


def test_malformed_answers_are_per_latent_failures(config):
    with serving(FaultServer()) as server:
        server.script = [("status", 200, {}, {"choices": ["x"]})] * 2
        code, output = explain(config, server.url)
    assert code == 0, output
    errors = [r["error"] for r in records(config).values()]
    assert len(errors) == 4 and sum("sent a malformed answer" in e for e in errors) == 2
    assert (
        sum(e.startswith("unparseable answer") for e in errors) == 2
    )  # the stub's "hello" has no explanation


def test_a_blackholed_server_is_reported_quickly(config):
    with blackholed_port() as port:
        started = time.monotonic()
        code, output = explain(config, f"http://127.0.0.1:{port}/v1", "explainer.connect_timeout=0.5")
    assert code == 2 and "cannot reach" in output and len(output.splitlines()) == 1, output
    assert time.monotonic() - started < 10
