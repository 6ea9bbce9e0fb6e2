"""Coder loaders against the sparsify library, the Gemma Scope formula and hand-made neurons (SAE Lens:
test_coders_saelens.py)."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub
import pytest
import torch
import transformers
from sparsify import SparseCoder as RefCoder
from sparsify import SparseCoderConfig as RefCfg

from autointerp.coders import FORMATS, Format, load_coders, register
from autointerp.coders.base import SparseActivations
from autointerp.config import SparseCoderConfig
from autointerp.errors import ConfigError
from tests.coder_factories import random_sae_weights, write_gemmascope

D_IN, N_LATENTS = 32, 64


def dense(acts: SparseActivations, tokens: int, n: int) -> torch.Tensor:
    out = torch.zeros(tokens, n)
    out[acts.rows, acts.latents] = acts.values
    return out


def ref_dense(values: torch.Tensor, indices: torch.Tensor, n: int) -> torch.Tensor:
    return torch.zeros(values.shape[0], n).scatter(1, indices, values)


@pytest.fixture(scope="module")
def model() -> transformers.LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=100,
    )
    return transformers.LlamaForCausalLM(cfg).eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(20, D_IN, generator=torch.Generator().manual_seed(1))


def load_one(path: Path, model: transformers.LlamaForCausalLM, hookpoint: str = "layers.1", **kw: object):
    """The coder of one hookpoint read from `path`."""
    cfg = SparseCoderConfig(path=str(path), hookpoints=(hookpoint,), **kw)
    return load_coders(cfg, model.model)[hookpoint]


def save_sparsify(folder: Path, seed: int, **cfg: object) -> Path:
    torch.manual_seed(seed)
    coder = RefCoder(D_IN, RefCfg(num_latents=N_LATENTS, k=4, **cfg), dtype=torch.float32)
    with torch.no_grad():
        coder.encoder.bias.normal_(0, 0.3)
        coder.b_dec.normal_(0, 0.3)
    coder.save_to_disk(folder)
    return folder


@pytest.mark.parametrize(
    "cfg", [{}, {"transcode": True}, {"activation": "groupmax"}], ids=["topk", "transcoder", "groupmax"]
)
def test_sparsify_matches_library(tmp_path, model, x, cfg):
    folder = save_sparsify(tmp_path / "layers.1", seed=3, **cfg)
    coder = load_one(tmp_path, model)
    values, indices, _ = RefCoder.load_from_disk(folder).encode(x)
    got = coder.encode(x)
    assert torch.allclose(dense(got, 20, N_LATENTS), ref_dense(values, indices, N_LATENTS), atol=1e-5)
    assert (got.values != 0).all() and got.values.dtype == torch.float32
    assert coder.reads_input == cfg.get("transcode", False)
    assert (coder.module_path, coder.num_latents, coder.d_in) == ("layers.1", N_LATENTS, D_IN)
    assert coder.decoder_directions().shape == (N_LATENTS, D_IN)


def test_single_hookpoint_folder_and_fingerprint(tmp_path, model, x):
    save_sparsify(tmp_path, seed=4)
    cfg = SparseCoderConfig(path=str(tmp_path), hookpoints=("layers.0.mlp",))
    coder = load_coders(cfg, model.model)["layers.0.mlp"]
    first = coder.fingerprint()
    assert first["format"] == "sparsify" and coder.module_path == "layers.0.mlp"
    save_sparsify(tmp_path, seed=5)
    assert load_coders(cfg, model.model)["layers.0.mlp"].fingerprint() != first


def test_gemmascope(tmp_path, model, x):
    w = random_sae_weights(D_IN, N_LATENTS)
    write_gemmascope(tmp_path / "layers.1", w)
    coder = load_one(tmp_path, model)
    pre = x @ w["W_enc"] + w["b_enc"]
    expected = pre.relu() * (pre > w["threshold"])
    assert ((pre > 0) & (expected == 0)).any()
    assert torch.allclose(dense(coder.encode(x), 20, N_LATENTS), expected, atol=1e-5)
    assert coder.fingerprint()["format"] == "gemmascope"
    coder.to(torch.device("cpu"), torch.bfloat16)
    assert coder.encode(x).values.dtype == torch.float32


def mlp_hidden(model: transformers.LlamaForCausalLM, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Down-projection input caught by a hook, and the same computed by hand from the MLP's input."""
    mlp = model.model.layers[layer].mlp
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        mlp.register_forward_pre_hook(lambda _, args: seen.setdefault("mlp_in", args[0])),
        mlp.down_proj.register_forward_pre_hook(lambda _, args: seen.setdefault("hidden", args[0])),
    ]
    with torch.no_grad():
        model(torch.randint(0, 100, (2, 6), generator=torch.Generator().manual_seed(2)))
        h = seen["mlp_in"].reshape(-1, 32)
        by_hand = mlp.act_fn(mlp.gate_proj(h)) * mlp.up_proj(h)
    for hook in hooks:
        hook.remove()
    return seen["hidden"].reshape(-1, 64), by_hand


@pytest.mark.parametrize("hookpoint", ["layers.1.mlp", "layers.1.mlp.down_proj"])
def test_neurons(model, hookpoint):
    hidden, by_hand = mlp_hidden(model, 1)
    assert torch.allclose(hidden, by_hand, atol=1e-6)
    coder = load_coders(SparseCoderConfig(format="neurons", hookpoints=(hookpoint,)), model.model)[hookpoint]
    assert (coder.module_path, coder.reads_input) == ("layers.1.mlp.down_proj", True)
    assert coder.num_latents == coder.d_in == 64
    assert torch.equal(dense(coder.encode(hidden), 12, 64), hidden.relu())
    down = model.model.layers[1].mlp.down_proj.weight
    assert torch.equal(coder.decoder_directions(), down.T)


def test_topk_neurons(model):
    hidden, _ = mlp_hidden(model, 0)
    cfg = SparseCoderConfig(format="topk-neurons", hookpoints=("layers.0.mlp",), k=3)
    acts = load_coders(cfg, model.model)["layers.0.mlp"].encode(hidden)
    kth = hidden.topk(3, dim=-1).values[:, -1:]
    expected = torch.where((hidden >= kth) & (hidden > 0), hidden, torch.zeros_like(hidden))
    assert torch.equal(dense(acts, 12, 64), expected)
    assert torch.bincount(acts.rows, minlength=12).max() <= 3 and (acts.values > 0).all()


def test_missing_hookpoint_folder(tmp_path, model):
    save_sparsify(tmp_path / "layers.0", seed=0)
    save_sparsify(tmp_path / "layers.1", seed=1)
    with pytest.raises(ConfigError, match=r"sparse_coder.hookpoints.*layers\.0, layers\.1"):
        load_coders(SparseCoderConfig(path=str(tmp_path), hookpoints=("layers.0", "layers.5")), model.model)


def test_unknown_files(tmp_path, model):
    (tmp_path / "layers.1").mkdir()
    (tmp_path / "layers.1" / "weights.pt").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"sparse_coder.path.*params.npz.*weights.pt"):
        load_one(tmp_path, model)


def test_wrong_explicit_format(tmp_path, model):
    save_sparsify(tmp_path / "layers.1", seed=0)
    with pytest.raises(ConfigError, match="sparse_coder.format"):
        load_one(tmp_path, model, format="saelens")


def test_unknown_module(model):
    with pytest.raises(ConfigError, match=r"sparse_coder.hookpoints.*'layer.1.mlp'.*layers.1.mlp"):
        load_coders(SparseCoderConfig(format="topk-neurons", hookpoints=("layer.1.mlp",)), model.model)
    with pytest.raises(ConfigError, match="neither an MLP"):
        load_coders(SparseCoderConfig(format="neurons", hookpoints=("layers.1",)), model.model)


def test_unfetchable_path(monkeypatch, model):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match="sparse_coder.path.*could not be fetched"):
        load_coders(SparseCoderConfig(path="no-such-org/no-such-repo", hookpoints=("layers.1",)), model.model)


def test_duplicate_registration():
    with pytest.raises(ValueError, match="twice"):
        register(Format("neurons", FORMATS["neurons"].load))


def test_file_coder_on_unknown_module(tmp_path, model):
    save_sparsify(tmp_path / "layer.1", seed=0)
    with pytest.raises(ConfigError, match=r"sparse_coder.hookpoints.*did you mean layers\.1"):
        load_one(tmp_path, model, hookpoint="layer.1")
