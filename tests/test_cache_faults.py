"""Run directories and the cache stage under faults: the SLURM chain with `dtype: auto`, --force in
array tasks, foreign folders, damaged or deleted cache files, empty corpora, leaked temporaries."""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from cache_factory import write_synthetic_cache
from safetensors import safe_open
from safetensors.torch import save_file
from typer.testing import CliRunner

from autointerp.cache import CacheReader, run_cache
from autointerp.cache import stage as cache_stage
from autointerp.cache.tokens import write_tokens
from autointerp.cli import app
from autointerp.config import load_config
from autointerp.errors import UserError
from autointerp.rundir import (
    RUN_MARKER,
    TOKENS_FILE,
    ShardSpec,
    atomic_dir,
    claim_run_dir,
    write_json_atomic,
)
from autointerp.subject import model as subject_model

runner = CliRunner()


def invoke(*args: object) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output.strip()


def assert_one_line_error(code: int, output: str, *fragments: str) -> None:
    assert code == 2, output
    assert "Traceback" not in output and len(output.splitlines()) == 1 and output.startswith("error:"), output
    for fragment in fragments:
        assert fragment in output, output


def _bfloat16_everywhere(dtype: str, device: torch.device) -> torch.dtype:
    return torch.bfloat16 if dtype == "auto" else subject_model.DTYPES[dtype]


def test_slurm_chain_with_dtype_auto_merges_without_the_model(tmp_path, tiny_config, monkeypatch):
    """Array tasks on bf16 GPUs compute the parts; the CPU merge job resolves float32 and has no model."""
    config = load_config(tiny_config, [f"out_dir={tmp_path / 'run'}"])
    assert config.model.dtype == "auto"
    with monkeypatch.context() as gpu_node:
        gpu_node.setattr(subject_model, "resolve_dtype", _bfloat16_everywhere)
        for index in range(2):
            run_cache(config, ShardSpec(index, 2))

    def no_model(*args, **kwargs):
        raise AssertionError("the merge loaded the subject model")

    monkeypatch.setattr(cache_stage, "load_subject", no_model)
    report = run_cache(config)
    assert set(report.status.values()) == {"cached (merged)"}
    reader = CacheReader(config.run_dir / "cache" / "layers.1")
    assert reader.manifest["cache_key"]["model"]["dtype"] == "auto"
    assert reader.num_sequences == 2048 // 32 and reader.latent(0).token_index.size >= 0
    assert run_cache(config).status == {"layers.1": "already cached", "layers.0.mlp": "already cached"}


def test_force_is_refused_in_array_tasks_before_anything_is_deleted(tmp_path, tiny_config, monkeypatch):
    config = load_config(tiny_config, [f"out_dir={tmp_path / 'run'}"])
    with pytest.raises(UserError, match="--force"):
        run_cache(config, ShardSpec(0, 2), force=True)
    records = config.run_dir / "explanations" / "layers.1.shard-1-of-2.jsonl"
    records.parent.mkdir(parents=True)
    records.write_text('{"latent": 3, "explanation": "x"}\n')
    for command in ("cache", "explain", "score", "run"):
        code, output = invoke(
            command, tiny_config, "--set", f"out_dir={config.run_dir}", "--shard", "0/2", "--force"
        )
        assert_one_line_error(code, output, "--force", "--shard")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    assert_one_line_error(
        *invoke("explain", tiny_config, "--set", f"out_dir={config.run_dir}", "--force"), "--force"
    )
    assert records.read_text() == '{"latent": 3, "explanation": "x"}\n'


def test_a_folder_not_written_by_autointerp_is_refused(tmp_path, tiny_config):
    project = tmp_path / "proj"
    (project / "report").mkdir(parents=True)
    (project / "config.yaml").write_text("mine")
    (project / "report" / "keep.txt").write_text("keep")
    for command in ("cache", "run"):
        code, output = invoke(command, tiny_config, "--set", f"out_dir={project}")
        assert_one_line_error(code, output, "out_dir", "not an autointerp run directory")
    assert_one_line_error(*invoke("report", project), "not an autointerp run directory")
    assert (project / "config.yaml").read_text() == "mine" and (project / "report" / "keep.txt").is_file()
    assert not (project / RUN_MARKER).exists()


def test_new_and_older_run_directories_are_marked(tmp_path):
    claim_run_dir(tmp_path / "new")
    assert (tmp_path / "new" / RUN_MARKER).is_file()
    old = tmp_path / "old"
    write_json_atomic(old / "cache" / "layers.1" / "manifest.json", {"format_version": 1})
    (old / "config.yaml").write_text("model: {path: x}\n")
    claim_run_dir(old)
    assert json.loads((old / RUN_MARKER).read_text())["tool"] == "autointerp"


def test_tasks_claiming_one_folder_at_once_all_succeed(tmp_path):
    errors: list[BaseException] = []

    def claim() -> None:
        try:
            claim_run_dir(tmp_path / "run")
            (tmp_path / "run" / f"task-{threading.get_ident()}").write_text("x")
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_empty_corpus_writes_no_tokens_and_a_filled_one_is_used(tmp_path, tiny_config):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("")
    args = [
        "--set",
        "dataset.path=json",
        "--set",
        f"dataset.data_files=[{docs}]",
        "--set",
        "cache.n_tokens=512",
    ]
    args += ["--set", f"out_dir={tmp_path / 'run'}"]
    assert_one_line_error(*invoke("cache", tiny_config, *args), "dataset.data_files", "no rows")
    docs.write_text('{"text": "too short"}\n')
    assert_one_line_error(*invoke("cache", tiny_config, *args), "dataset.path", "no full sequence")
    assert not list((tmp_path / "run" / "cache").rglob("tokens.safetensors"))
    text = " ".join(f"word{i} is here and there." for i in range(400))
    docs.write_text("\n".join(json.dumps({"text": text}) for _ in range(4)) + "\n")
    code, output = invoke("cache", tiny_config, *args)
    assert code == 0, output
    assert CacheReader(tmp_path / "run" / "cache" / "layers.1").num_sequences > 0


def test_a_deleted_manifest_with_stale_files_is_refused_until_forced(tmp_path, tiny_config):
    base = [
        "--set",
        f"out_dir={tmp_path / 'run'}",
        "--set",
        "cache.n_tokens=512",
        "--set",
        "examples.window=8",
    ]
    assert invoke("cache", tiny_config, *base)[0] == 0
    folder = tmp_path / "run" / "cache" / "layers.1"
    (folder / "manifest.json").unlink()
    code, output = invoke("cache", tiny_config, *base, "--set", "cache.ctx_len=16")
    assert_one_line_error(code, output, str(folder), "manifest.json", "--force")
    assert invoke("cache", tiny_config, *base, "--set", "cache.ctx_len=16", "--force")[0] == 0
    assert CacheReader(folder).tokens().shape[1] == 16


@pytest.fixture
def cached(tmp_path, tiny_config) -> Path:
    assert (
        invoke("cache", tiny_config, "--set", f"out_dir={tmp_path / 'run'}", "--set", "cache.n_tokens=512")[0]
        == 0
    )
    return tmp_path / "run" / "cache" / "layers.1"


def test_a_manifest_that_is_not_json_is_one_line(cached, tiny_config):
    (cached / "manifest.json").write_text("{")
    out_dir = cached.parent.parent
    code, output = invoke("cache", tiny_config, "--set", f"out_dir={out_dir}", "--set", "cache.n_tokens=512")
    assert_one_line_error(code, output, str(cached / "manifest.json"), "--force")
    with pytest.raises(UserError, match="not valid JSON"):
        CacheReader(cached)


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda m: {**m, "shards": []}, "no shards"),
        (lambda m: {**m, "num_latents": m["num_latents"] + 8}, "num_latents"),
        (lambda m: {k: v for k, v in m.items() if k != "ctx_len"}, "ctx_len"),
        (lambda m: {**m, "shards": [m["shards"][0], m["shards"][0], *m["shards"][2:]]}, "in order"),
    ],
)
def test_hand_edited_manifests_are_refused_by_the_reader(cached, edit, fragment):
    manifest = json.loads((cached / "manifest.json").read_text())
    (cached / "manifest.json").write_text(json.dumps(edit(manifest)))
    with pytest.raises(UserError, match=fragment) as caught:
        CacheReader(cached)
    assert str(cached / "manifest.json") in str(caught.value)


def test_a_truncated_shard_is_a_user_error_naming_it(cached):
    reader = CacheReader(cached)
    shard = cached / reader.manifest["shards"][0]["file"]
    os.truncate(shard, shard.stat().st_size // 2)
    with pytest.raises(UserError, match="cannot be read") as caught:
        CacheReader(cached).latent(0)
    assert str(shard) in str(caught.value)


def test_bfloat16_shards_keep_token_indices_past_float32_precision(tmp_path):
    """A bfloat16 shard is read through torch: its int32 token indices must not pass through float32
    (which holds integers exactly only to 2**24, 16.8M tokens)."""
    where = [2**24 + 1, 2**24 + 3, 30_000_001]
    reader = write_synthetic_cache(
        tmp_path / "layers.0", np.zeros((4, 64), np.int32), {0: [(i, 1.5) for i in where]}, 2
    )
    shard = reader.dir / reader.manifest["shards"][0]["file"]
    with safe_open(str(shard), framework="pt") as f:
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    save_file(tensors | {"activation": tensors["activation"].to(torch.bfloat16)}, shard)
    acts = CacheReader(reader.dir).latent(0)
    assert acts.token_index.tolist() == where and acts.activation.tolist() == [1.5] * 3


@pytest.mark.parametrize("damage", ["truncated", "not safetensors", "other dtype", "offsets"])
def test_a_damaged_token_file_is_a_user_error_naming_it(cached, damage):
    """The token file is memory-mapped (not read) by the example builder: damage is still named."""
    tokens = cached / TOKENS_FILE
    rows = CacheReader(cached).token_array()
    assert rows.dtype == np.int32 and rows.shape == (CacheReader(cached).num_sequences, 32)
    np.testing.assert_array_equal(rows, CacheReader(cached).tokens().numpy())
    del rows
    if damage == "truncated":
        os.truncate(tokens, tokens.stat().st_size - 8)
    elif damage == "not safetensors":
        tokens.write_bytes(b"not a safetensors file at all")
    elif damage == "other dtype":
        tokens.unlink()
        save_file({"tokens": torch.zeros(4, 32, dtype=torch.int64)}, tokens)
    else:  # offsets pointing into the header, with a consistent length
        data = bytearray(tokens.read_bytes())
        size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + size])
        begin, end = header["tokens"]["data_offsets"]
        header["tokens"]["data_offsets"] = [begin - 16, end - 16]
        text = json.dumps(header, separators=(",", ":")).encode().ljust(size)
        assert len(text) == size
        tokens.write_bytes(bytes(data[:8]) + text + bytes(data[8 + size :]))
    with pytest.raises(UserError, match="cannot be read") as caught:
        CacheReader(cached).token_array()
    assert str(tokens) in str(caught.value)


def test_stale_temporaries_are_swept_and_live_ones_kept(cached, tiny_config):
    old, fresh = cached / ".stats.safetensors.abc.tmp", cached / ".manifest.json.def.tmp"
    old_dir = cached / ".layers.1.x.tmp"
    for path in (old, fresh):
        path.write_bytes(b"x" * 10)
    old_dir.mkdir()
    hour_ago = time.time() - 7200
    for path in (old, old_dir):
        os.utime(path, (hour_ago, hour_ago))
    run_cache(load_config(tiny_config, [f"out_dir={cached.parent.parent}", "cache.n_tokens=512"]))
    assert not old.exists() and not old_dir.exists() and fresh.exists()


def test_tokenizing_tasks_with_the_same_pid_do_not_share_a_scratch_file(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "getpid", lambda: 42)
    rows = [np.full(8, i, dtype=np.int32) for i in range(50)]

    def slow_rows():
        for row in rows:
            time.sleep(0.002)
            yield row

    shared = tmp_path / "shared" / "tokens.safetensors"
    threads = [threading.Thread(target=write_tokens, args=(slow_rows(), 50, 8, shared)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with safe_open(str(shared), framework="np") as f:
        assert np.array_equal(f.get_tensor("tokens"), np.stack(rows))
    assert [p.name for p in shared.parent.iterdir()] == ["tokens.safetensors"]


def test_a_directory_fsync_the_file_system_rejects_is_ignored(tmp_path, monkeypatch):
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            raise OSError(errno.EINVAL, "Invalid argument")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_json_atomic(tmp_path / "a.json", {"x": 1})
    with atomic_dir(tmp_path / "folder") as tmp:
        (tmp / "f").write_text("y")
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1} and (tmp_path / "folder" / "f").is_file()


def test_a_replacing_atomic_dir_keeps_the_old_folder_when_the_new_one_fails(tmp_path):
    target = tmp_path / "coder"
    target.mkdir()
    (target / "old").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target, replace=True) as tmp:
        (tmp / "new").write_text("new")
        raise RuntimeError("training died")
    assert (target / "old").read_text() == "old"
    with atomic_dir(target, replace=True) as tmp:
        (tmp / "new").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new"] and [p.name for p in tmp_path.iterdir()] == ["coder"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {
                "SLURM_ARRAY_TASK_ID": "4",
                "SLURM_ARRAY_TASK_MIN": "0",
                "SLURM_ARRAY_TASK_MAX": "14",
                "SLURM_ARRAY_TASK_STEP": "2",
                "SLURM_ARRAY_TASK_COUNT": "8",
            },
            ShardSpec(2, 8),
        ),
        (
            {
                "SLURM_ARRAY_TASK_ID": "7",
                "SLURM_ARRAY_TASK_MIN": "4",
                "SLURM_ARRAY_TASK_MAX": "7",
                "SLURM_ARRAY_TASK_COUNT": "4",
            },
            ShardSpec(3, 4),
        ),
        ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "1"}, ShardSpec(0, 1)),
        (
            {
                "SLURM_ARRAY_TASK_ID": "5",
                "SLURM_ARRAY_TASK_MIN": "1",
                "SLURM_ARRAY_TASK_MAX": "9",
                "SLURM_ARRAY_TASK_COUNT": "3",
            },
            "does not map",
        ),
        (
            {
                "SLURM_ARRAY_TASK_ID": "1",
                "SLURM_ARRAY_TASK_MIN": "1",
                "SLURM_ARRAY_TASK_MAX": "9",
                "SLURM_ARRAY_TASK_COUNT": "3",
            },
            "does not map",
        ),
        (
            {
                "SLURM_ARRAY_TASK_ID": "3",
                "SLURM_ARRAY_TASK_MIN": "3",
                "SLURM_ARRAY_TASK_MAX": "3",
                "SLURM_ARRAY_TASK_COUNT": "1",
            },
            "resubmitted",
        ),
    ],
)
def test_slurm_array_shapes(env, expected):
    if isinstance(expected, ShardSpec):
        assert ShardSpec.from_env(env) == expected
    else:
        with pytest.raises(UserError, match=expected):
            ShardSpec.from_env(env)


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_the_rerun_resumes_to_identical_files(
    tmp_path, tiny_model_dir, sparsify_coders_dir
):
    import signal
    import subprocess
    import sys

    from conftest import write_config

    cache = {"n_tokens": 65536, "sequences_per_part": 32}
    reference = write_config(tmp_path / "ref.yaml", tiny_model_dir, sparsify_coders_dir, cache=cache)
    victim = write_config(
        tmp_path / "victim.yaml",
        tiny_model_dir,
        sparsify_coders_dir,
        cache=cache,
        out_dir=str(tmp_path / "victim"),
    )
    run_cache(load_config(reference))
    command = [sys.executable, "-m", "autointerp", "cache", str(victim)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    parts = tmp_path / "victim" / "cache" / "layers.1" / "parts"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None and len(list(parts.glob("part-*"))) < 3:
        time.sleep(0.05)
    assert process.poll() is None, f"the run ended before it could be stopped: {process.stderr.read()}"
    process.send_signal(signal.SIGTERM)
    stderr = process.communicate(timeout=60)[1]
    assert process.returncode == 143, stderr
    assert "SIGTERM" in stderr and "Traceback" not in stderr
    assert not list((tmp_path / "victim").rglob("*.tmp")), "an interrupted write left its temporary file"
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    root = tmp_path / "run" / "cache"
    expected = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.safetensors"))}
    root = tmp_path / "victim" / "cache"
    assert expected == {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.safetensors"))}


def test_a_merge_with_missing_parts_says_it_computes_them(tmp_path, tiny_config):
    config = load_config(tiny_config, [f"out_dir={tmp_path / 'run'}", "cache.n_tokens=1024"])
    run_cache(config, ShardSpec(0, 2))
    report = run_cache(config)
    assert any("1 of 2 parts are missing" in warning for warning in report.warnings), report.warnings
    assert report.tokens_processed == 512


def test_a_truncated_part_is_named_and_recomputed_once_deleted(tmp_path, tiny_config):
    config = load_config(tiny_config, [f"out_dir={tmp_path / 'run'}", "cache.n_tokens=1024"])
    run_cache(config, ShardSpec(0, 2))
    run_cache(config, ShardSpec(1, 2))
    part = sorted((config.run_dir / "cache" / "layers.1" / "parts").glob("part-*"))[0]
    os.truncate(part, part.stat().st_size // 2)
    with pytest.raises(UserError, match="cannot be read") as caught:
        run_cache(config)
    assert str(part) in str(caught.value) and "delete it" in str(caught.value)
    part.unlink()
    assert run_cache(config).tokens_processed == 512


def test_caches_that_hashed_the_resolved_dtype_are_still_current(cached, tiny_config):
    from autointerp.rundir import config_hash

    manifest = json.loads((cached / "manifest.json").read_text())
    manifest["cache_key"]["model"]["dtype"] = "float32"  # what versions before hashed for `auto` on CPU
    manifest["config_hash"] = config_hash(manifest["cache_key"])
    (cached / "manifest.json").write_text(json.dumps(manifest))
    config = load_config(tiny_config, [f"out_dir={cached.parent.parent}", "cache.n_tokens=512"])
    assert run_cache(config).status["layers.1"] == "already cached"
    explicit = load_config(
        tiny_config, [f"out_dir={cached.parent.parent}", "cache.n_tokens=512", "model.dtype=bfloat16"]
    )
    with pytest.raises(UserError, match="model.dtype changed"):
        run_cache(explicit)
