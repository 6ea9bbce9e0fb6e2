"""Shared fixtures: a tiny random-weight Llama with a real tokenizer, and sparsify coders for it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# A fresh datasets cache per test session: `datasets` reuses a cached build of a local folder whose path
# and card are unchanged, so a re-created test folder would otherwise be read from an earlier session.
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="autointerp-tests-datasets-")

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from tokenizer_factory import save_tiny_llama  # noqa: E402

HIDDEN = 32


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 3-layer Llama with random weights and a trained 300-token BPE tokenizer, saved as a folder."""
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), HIDDEN)


@pytest.fixture(scope="session")
def sparsify_coders_dir(tmp_path_factory) -> Path:
    """sparsify-written coders: a TopK SAE on `layers.1` and a TopK transcoder on `layers.0.mlp`."""
    from sparsify import SparseCoder, SparseCoderConfig

    directory = tmp_path_factory.mktemp("coders")
    torch.manual_seed(1)
    for hookpoint, transcode in (("layers.1", False), ("layers.0.mlp", True)):
        coder = SparseCoder(HIDDEN, SparseCoderConfig(num_latents=96, k=6, transcode=transcode))
        with torch.no_grad():
            coder.encoder.bias.normal_(0, 0.1)
            coder.b_dec.normal_(0, 0.1)
            if transcode:
                coder.W_dec.normal_()
        coder.save_to_disk(directory / hookpoint)
    return directory


def write_config(path: Path, model_dir: Path, coders_dir: Path, **sections) -> Path:
    """A small run config for the tiny model; keyword sections are merged over the defaults."""
    config = {
        "name": "tiny",
        "out_dir": str(path.parent / "run"),
        "model": {"path": str(model_dir), "device": "cpu"},
        "sparse_coder": {"path": str(coders_dir), "hookpoints": ["layers.1", "layers.0.mlp"]},
        "dataset": {"path": "builtin:python-docs"},
        "cache": {
            "n_tokens": 2048,
            "ctx_len": 32,
            "batch_size": 8,
            "latents_per_shard": 40,
            "sequences_per_part": 16,
        },
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def tiny_config(tmp_path, tiny_model_dir, sparsify_coders_dir) -> Path:
    return write_config(tmp_path / "config.yaml", tiny_model_dir, sparsify_coders_dir)


@pytest.fixture
def auto_backend(monkeypatch):
    """`backend: auto` answered by the loopback server whatever it resolves to; call with True for a machine
    with vLLM installed (auto is vllm), False for one without (transformers)."""
    from autointerp import llm

    for backend in ("vllm", "transformers"):
        monkeypatch.setitem(llm.BACKENDS, backend, llm.BACKENDS["openai"])
    return lambda installed: monkeypatch.setattr(llm, "vllm_installed", lambda: installed)
