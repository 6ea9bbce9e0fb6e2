"""The cache stage: content against a direct forward pass, resume, staleness, sharding."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from sparsify import SparseCoder as ReferenceCoder
from transformers import AutoModelForCausalLM, AutoTokenizer

from autointerp.cache import CacheReader, run_cache
from autointerp.config import load_config
from autointerp.errors import UserError
from autointerp.rundir import ShardSpec

OVERHEAD = 8 * 99 + 3 * 256  # indptr of 96 latents in 3 shards, plus 3 file headers


def dense_from_cache(reader: CacheReader) -> np.ndarray:
    """[num_tokens, num_latents] from the shards, for comparison in tests only."""
    dense = np.zeros((reader.num_sequences * reader.ctx_len, reader.num_latents), dtype=np.float32)
    for latent in range(reader.num_latents):
        acts = reader.latent(latent)
        assert np.all(np.diff(acts.token_index) > 0), "token indices must be sorted within a latent"
        dense[acts.token_index, latent] = acts.activation
    return dense


def reference_dense(model_dir: Path, coder_dir: Path, tokens: torch.Tensor, hookpoint: str, transcode: bool):
    """Direct forward pass of the whole model plus the reference library's own encode."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    coder = ReferenceCoder.load_from_disk(coder_dir / hookpoint)
    captured = []
    module = model.model.get_submodule(hookpoint)
    if transcode:
        handle = module.register_forward_pre_hook(lambda m, args: captured.append(args[0]))
    else:
        handle = module.register_forward_hook(
            lambda m, a, out: captured.append(out[0] if isinstance(out, tuple) else out)
        )
    with torch.no_grad():
        model(input_ids=tokens.long())
        handle.remove()
        x = captured[0].reshape(-1, captured[0].shape[-1])
        top = coder.encode(x)
    dense = torch.zeros(x.shape[0], coder.num_latents)
    dense.scatter_(1, top.top_indices, top.top_acts)
    return dense.numpy()


def cache_files(run_dir: Path) -> dict[str, bytes]:
    root = run_dir / "cache"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.safetensors"))}


def test_csr_matches_direct_forward_and_reference_encode(tiny_config, tiny_model_dir, sparsify_coders_dir):
    config = load_config(tiny_config)
    report = run_cache(config)
    assert set(report.status.values()) == {"cached"}
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    special = set(tokenizer.all_special_ids)
    for hookpoint, transcode in (("layers.1", False), ("layers.0.mlp", True)):
        reader = CacheReader(config.run_dir / "cache" / hookpoint)
        tokens = reader.tokens()
        assert tokens.dtype == torch.int32 and tokens.shape == (2048 // 32, 32)
        assert torch.all(tokens[:, 0] == tokenizer.bos_token_id)
        cached = dense_from_cache(reader)
        expected = reference_dense(tiny_model_dir, sparsify_coders_dir, tokens, hookpoint, transcode)
        masked = np.isin(tokens.reshape(-1).numpy(), list(special))
        assert masked.sum() > tokens.shape[0], "BOS and EOS positions should be present in the input"
        assert np.all(cached[masked] == 0), "special tokens must not be stored"
        np.testing.assert_allclose(cached[~masked], expected[~masked], atol=1e-4, rtol=0)
        manifest = reader.manifest
        assert manifest["complete"] and manifest["num_latents"] == 96
        assert [(s["start"], s["end"]) for s in manifest["shards"]] == [(0, 40), (40, 80), (80, 96)]
        assert manifest["stats"]["mean_l0"] == pytest.approx(6, abs=0.5)
        stats = reader.stats()
        np.testing.assert_array_equal(stats["firing_count"], (cached != 0).sum(0))
        np.testing.assert_allclose(stats["max_activation"], cached.max(0), rtol=1e-6)
        with safe_open(str(reader.dir / manifest["shards"][0]["file"]), framework="pt") as f:
            assert f.get_slice("token_index").get_dtype() == "I32"
            assert f.get_slice("activation").get_dtype() == "F32"
        assert manifest["stats"]["bytes_per_activation"] <= 8 + OVERHEAD / manifest["stats"]["nnz"]
    assert not (config.run_dir / "cache" / "layers.1" / "parts").exists()
    assert (
        os.stat(config.run_dir / "cache/layers.1/tokens.safetensors").st_ino
        == os.stat(config.run_dir / "cache/layers.0.mlp/tokens.safetensors").st_ino
    ), "tokens are stored once and linked"


def test_bfloat16_activations_take_six_bytes(tmp_path, tiny_config):
    config = load_config(tiny_config, ["cache.activation_dtype=bfloat16", f"out_dir={tmp_path / 'bf16'}"])
    run_cache(config)
    reader = CacheReader(config.run_dir / "cache" / "layers.1")
    with safe_open(str(reader.dir / reader.manifest["shards"][0]["file"]), framework="pt") as f:
        assert f.get_slice("activation").get_dtype() == "BF16"
    assert reader.manifest["stats"]["bytes_per_activation"] <= 6 + OVERHEAD / reader.manifest["stats"]["nnz"]
    float32 = CacheReader(run_cache_float32(tiny_config, tmp_path) / "cache" / "layers.1")
    fired = np.flatnonzero(float32.stats()["firing_count"])
    for latent in fired[:: max(len(fired) // 20, 1)].tolist():  # read as float32, within bfloat16 rounding
        a, b = reader.latent(latent), float32.latent(latent)
        assert a.activation.dtype == np.float32 and a.token_index.dtype == np.int64
        np.testing.assert_array_equal(a.token_index, b.token_index)
        np.testing.assert_allclose(a.activation, b.activation, rtol=1 / 128)


def run_cache_float32(tiny_config, tmp_path: Path) -> Path:
    config = load_config(tiny_config, [f"out_dir={tmp_path / 'f32'}"])
    run_cache(config)
    return config.run_dir


def test_rerun_is_skipped_and_stale_cache_refused(tiny_config):
    config = load_config(tiny_config)
    run_cache(config)
    assert set(run_cache(config).status.values()) == {"already cached"}
    changed = load_config(tiny_config, ["cache.n_tokens=1024", "dataset.text_column=body"])
    with pytest.raises(
        UserError, match=r"cache\.n_tokens.*dataset\.text_column|dataset\.text_column.*n_tokens"
    ):
        run_cache(changed)
    report = run_cache(load_config(tiny_config, ["cache.n_tokens=1024"]), force=True)
    assert set(report.status.values()) == {"cached"}
    assert CacheReader(config.run_dir / "cache" / "layers.1").num_sequences == 32


def test_shards_then_merge_equal_single_run(tmp_path, tiny_config):
    single = load_config(tiny_config, [f"out_dir={tmp_path / 'single'}"])
    run_cache(single)
    sharded = load_config(tiny_config, [f"out_dir={tmp_path / 'sharded'}"])
    for index in range(3):
        report = run_cache(sharded, ShardSpec(index, 3))
        assert report.tokens_processed > 0
        assert "run without --shard" in report.status["layers.1"]
    merge = run_cache(sharded)
    assert merge.tokens_processed == 0, "merging must not recompute finished parts"
    assert cache_files(single.run_dir) == cache_files(sharded.run_dir)


def test_interrupted_merge_resumes_to_identical_files(tmp_path, tiny_config, monkeypatch):
    reference = load_config(tiny_config, [f"out_dir={tmp_path / 'ref'}"])
    run_cache(reference)
    config = load_config(tiny_config, [f"out_dir={tmp_path / 'crash'}"])
    from autointerp.cache.merge import _ShardMerge

    original = _ShardMerge.write
    calls = []

    def crash_after_first_shard(self, *args, **kwargs):
        if calls:
            raise KeyboardInterrupt  # a fault at the worst moment: one shard written, the rest not
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(_ShardMerge, "write", crash_after_first_shard)
    with pytest.raises(KeyboardInterrupt):
        run_cache(config)
    monkeypatch.setattr(_ShardMerge, "write", original)
    manifest = json.loads((config.run_dir / "cache/layers.1/manifest.json").read_text())
    assert manifest["complete"] is False
    with pytest.raises(UserError, match="unfinished"):
        CacheReader(config.run_dir / "cache" / "layers.1")
    assert run_cache(config).tokens_processed == 0
    assert cache_files(reference.run_dir) == cache_files(config.run_dir)


@pytest.mark.slow
def test_kill_9_and_resume_gives_identical_files(tmp_path, tiny_model_dir, sparsify_coders_dir):
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
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    parts = tmp_path / "victim" / "cache" / "layers.1" / "parts"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None and len(list(parts.glob("part-*"))) < 3:
        time.sleep(0.05)
    assert process.poll() is None, (
        f"the run ended before it could be killed: {process.stderr.read().decode()}"
    )
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = list(parts.glob("part-*"))
    assert 3 <= len(done) < 64
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert cache_files(tmp_path / "run") == cache_files(tmp_path / "victim")


def test_merge_in_small_chunks_gives_identical_shards(tmp_path, tiny_config, monkeypatch):
    from autointerp.cache import merge

    reference = load_config(tiny_config, [f"out_dir={tmp_path / 'ref'}"])
    run_cache(reference)
    monkeypatch.setattr(merge, "CHUNK_ENTRIES", 7)  # many chunks per shard, single latents above the limit
    chunked = load_config(tiny_config, [f"out_dir={tmp_path / 'chunked'}"])
    run_cache(chunked)
    assert cache_files(reference.run_dir) == cache_files(chunked.run_dir)
