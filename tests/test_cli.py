"""The command line: one-line errors with exit code 2, overrides, shards, and a real cache run."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import yaml
from conftest import write_config
from typer.testing import CliRunner

from autointerp.cli import app

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    output = result.output.strip()
    return result.exit_code, output


def assert_one_line_error(code: int, output: str, *fragments: str) -> None:
    assert code == 2, output
    assert "Traceback" not in output
    lines = output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), output
    for fragment in fragments:
        assert fragment in output


def test_unknown_key_suggests_the_closest(tmp_path, tiny_config):
    data = yaml.safe_load(tiny_config.read_text())
    data["cache"]["n_tokns"] = 5
    tiny_config.write_text(yaml.safe_dump(data))
    assert_one_line_error(*invoke("cache", tiny_config), "cache.n_tokns", "did you mean 'n_tokens'")


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("cache.batch_size=abc", ("cache.batch_size", "must be int")),
        ("sparse_coder.format=safetensors", ("sparse_coder.format", "must be one of")),
        ("cache.ctx_len=0", ("cache.ctx_len", "at least")),
        ("modle.path=x", ("modle", "did you mean 'model'")),
        ("model.path=/no/such/model", ("model.path", "does not exist")),
        ("model.path=/no/such/model.gguf", ("model.path", "not found")),
        ("sparse_coder.hookpoints=[layers.9]", ("sparse_coder.hookpoints", "layers.9")),
        ("sparse_coder.hookpoints=[layers.1.mlpp]", ("sparse_coder.hookpoints",)),
        ("dataset.path=json", ("dataset.data_files", "required")),
        ("cache.ctx_len=1024", ("cache.ctx_len", "at most 512 positions")),
    ],
)
def test_bad_values_give_one_line_errors(tiny_config, override, fragments):
    assert_one_line_error(*invoke("cache", tiny_config, "--set", override), *fragments)


def test_missing_text_column_is_named(tmp_path, tiny_config):
    data_file = tmp_path / "docs.jsonl"
    data_file.write_text('{"body": "some text"}\n')
    overrides = ["dataset.path=json", f"dataset.data_files=[{data_file}]", "dataset.text_column=text"]
    args = [arg for override in overrides for arg in ("--set", override)]
    assert_one_line_error(*invoke("cache", tiny_config, *args), "dataset.text_column", "body")


def test_missing_config_file_and_bad_shard(tmp_path, tiny_config):
    assert_one_line_error(*invoke("cache", tmp_path / "nope.yaml"), "not found")
    assert_one_line_error(*invoke("cache", tiny_config, "--shard", "2/2"), "--shard")
    tiny_config.write_text("model: [unclosed")
    assert_one_line_error(*invoke("cache", tiny_config), "not valid YAML")


def test_coder_width_mismatch_is_a_config_error(tmp_path, tiny_model_dir):
    from sparsify import SparseCoder, SparseCoderConfig

    SparseCoder(16, SparseCoderConfig(num_latents=8, k=2)).save_to_disk(tmp_path / "coders" / "layers.1")
    config = write_config(
        tmp_path / "c.yaml", tiny_model_dir, tmp_path / "coders", sparse_coder={"hookpoints": ["layers.1"]}
    )
    assert_one_line_error(*invoke("cache", config), "width 16", "width 32")


def test_stale_cache_is_refused_until_forced(tiny_config):
    assert invoke("cache", tiny_config, "--set", "cache.n_tokens=512")[0] == 0
    code, output = invoke("cache", tiny_config, "--set", "cache.n_tokens=1024")
    assert_one_line_error(code, output, "cache.n_tokens", "--force")
    assert invoke("cache", tiny_config, "--set", "cache.n_tokens=1024", "--force")[0] == 0


def test_slurm_array_environment_selects_the_shard(tiny_config, monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "5")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "4")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    code, output = invoke("cache", tiny_config, "--set", "cache.n_tokens=1024")
    assert code == 0, output
    assert "shard 1/2" in " ".join(output.split())


@pytest.mark.slow
def test_python_dash_m_runs_the_same_cli(tiny_config, tmp_path):
    out = tmp_path / "m"
    command = [sys.executable, "-m", "autointerp", "cache", str(tiny_config), "--set", f"out_dir={out}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "cached" in result.stdout
    assert (out / "cache" / "layers.1" / "manifest.json").is_file()
    assert torch.cuda.is_available() or "layers.0.mlp" in result.stdout
