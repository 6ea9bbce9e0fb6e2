"""Hookpoints from coders: TransformerLens names as taps, contradictions refused, `saelens:` / `hf:` paths
resolved through a local HF hub cache, and `autointerp cache` offline with the hookpoint inferred."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub
import pytest
import torch
import transformers
import yaml
from sae_lens.registry import get_sae_class
from sae_lens.saes.sae import SAEMetadata
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.coders import hookpoint_names, load_coders, load_file_coder
from autointerp.config import SparseCoderConfig
from autointerp.errors import ConfigError
from autointerp.rundir import CONFIG_FILE
from autointerp.subject.hooknames import tap_for_tl_name
from autointerp.subject.hooks import ActivationReader, Tap
from tests.coder_factories import random_sae_weights, write_gemma_scope_2, write_gemmascope
from tests.conftest import HIDDEN, write_config
from tests.hub_cache import put_folder

RELEASE, REPO = "gpt2-small-res-jb", "jbloom/GPT2-Small-SAEs-Reformatted"
"""A real release of the packaged SAE Lens directory; its SAEs are replaced by tiny ones in the cache."""


def llama(layers: int = 2) -> transformers.LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=100,
    )
    return transformers.LlamaForCausalLM(cfg).eval()


def gemma3() -> transformers.Gemma3ForCausalLM:
    torch.manual_seed(0)
    cfg = transformers.Gemma3TextConfig(
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        vocab_size=100,
    )
    return transformers.Gemma3ForCausalLM(cfg).eval()


def read(model: torch.nn.Module, taps: list[Tap]) -> dict[Tap, torch.Tensor]:
    ids = torch.randint(0, 100, (2, 5), generator=torch.Generator().manual_seed(3))
    return ActivationReader(model.base_model, taps)(ids)


def test_residual_names_match_hf_hidden_states():
    model = llama(3)
    names = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"]
    taps = [tap_for_tl_name(model.base_model, name) for name in names]
    assert taps == [Tap("layers.0", True), Tap("layers.1", True), Tap("layers.1")]
    captured = read(model, taps)
    ids = torch.randint(0, 100, (2, 5), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states
    for tap, layer in zip(taps, (0, 1, 2), strict=True):
        torch.testing.assert_close(captured[tap], hidden[layer])


def test_llama_and_gemma_module_names():
    base = llama().base_model
    assert tap_for_tl_name(base, "blocks.1.hook_mlp_out") == Tap("layers.1.mlp")
    assert tap_for_tl_name(base, "blocks.1.hook_attn_out") == Tap("layers.1.self_attn")
    assert tap_for_tl_name(base, "blocks.1.ln2.hook_normalized") == Tap("layers.1.mlp", True)
    assert tap_for_tl_name(base, "blocks.1.hook_resid_mid") == Tap("layers.1.post_attention_layernorm", True)
    assert tap_for_tl_name(base, "blocks.1.attn.hook_z") == Tap("layers.1.self_attn.o_proj", True)
    assert tap_for_tl_name(base, "blocks.1.mlp.hook_post") == Tap("layers.1.mlp.down_proj", True)
    assert "has 2 layers" in tap_for_tl_name(base, "blocks.7.hook_resid_post")
    model = gemma3()
    gemma = model.base_model
    assert tap_for_tl_name(gemma, "blocks.1.hook_mlp_out") == Tap("layers.1.post_feedforward_layernorm")
    assert tap_for_tl_name(gemma, "blocks.1.hook_attn_out") == Tap("layers.1.post_attention_layernorm")
    assert tap_for_tl_name(gemma, "blocks.1.hook_resid_mid") == Tap(
        "layers.1.pre_feedforward_layernorm", True
    )
    taps = [tap_for_tl_name(gemma, n) for n in ("blocks.1.hook_mlp_out", "blocks.1.attn.hook_z")]
    captured = read(model, taps)
    assert captured[taps[0]].shape[-1] == HIDDEN and captured[taps[1]].shape[-1] == 4 * 8


def save_sae(folder: Path, hook_name: str, seed: int = 0, **metadata: object) -> Path:
    """A standard SAE written by SAE Lens, trained (its metadata says) at `hook_name`."""
    sae_cls, cfg_cls = get_sae_class("standard")
    sae = sae_cls(cfg_cls(d_in=HIDDEN, d_sae=48, metadata=SAEMetadata(hook_name=hook_name, **metadata)))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in sae.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    sae.save_model(folder)
    return folder


def test_contradicting_hookpoint_is_refused(tmp_path):
    base = llama().base_model
    folder = save_sae(tmp_path / "sae", "blocks.1.hook_resid_pre")
    with pytest.raises(
        ConfigError, match=r"layers.1 reads the output of layers.1.*input of layers.1.*use blocks"
    ):
        load_coders(SparseCoderConfig(path=str(folder), hookpoints=("layers.1",)), base)
    for same in ("layers.0", "blocks.1.hook_resid_pre", "blocks.0.hook_resid_post"):
        (coder,) = load_coders(SparseCoderConfig(path=str(folder), hookpoints=(same,)), base).values()
        assert coder.hookpoint == same
    (coder,) = load_coders(SparseCoderConfig(path=str(folder)), base).values()
    assert (coder.hookpoint, coder.module_path, coder.reads_input) == (
        "blocks.1.hook_resid_pre",
        "layers.1",
        True,
    )


def test_gemma_scope_2_transcoder_placed_on_gemma3(tmp_path):
    """`hf_hook_point_in` (the pre-MLP norm's output) is the MLP's input: `layers.1.mlp` is accepted."""
    model = gemma3()
    write_gemma_scope_2(tmp_path / "transcoder", HIDDEN, 48, transcoder=True, seed=1)
    cfg = SparseCoderConfig(path=str(tmp_path / "transcoder"))
    (coder,) = load_coders(cfg, model.base_model).values()
    assert (coder.hookpoint, coder.module_path) == (
        "blocks.1.ln2.hook_normalized",
        "layers.1.pre_feedforward_layernorm",
    )
    ours = read(model, [Tap(coder.module_path, coder.reads_input), Tap("layers.1.mlp", True)])
    torch.testing.assert_close(*ours.values())
    (same,) = load_coders(
        SparseCoderConfig(path=cfg.path, hookpoints=("layers.1.mlp",)), model.base_model
    ).values()
    assert (same.module_path, same.reads_input) == ("layers.1.mlp", True)
    with pytest.raises(ConfigError, match="reads the output of layers.1.post_feedforward_layernorm"):
        load_coders(SparseCoderConfig(path=cfg.path, hookpoints=("blocks.1.hook_mlp_out",)), model.base_model)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def fill_release(cache: Path, tmp_path: Path, layers: range, **metadata: object) -> None:
    for layer in layers:
        hook = f"blocks.{layer}.hook_resid_pre"
        put_folder(cache, REPO, hook, save_sae(tmp_path / "made" / hook, hook, seed=layer, **metadata))


def test_release_pattern_names_every_layer(tmp_path, hub_cache):
    fill_release(hub_cache, tmp_path, range(3))
    cfg = SparseCoderConfig(path=f"saelens:{RELEASE}/blocks.[0-2].hook_resid_pre")
    names = ("blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.2.hook_resid_pre")
    assert hookpoint_names(cfg) == names
    coders = load_coders(cfg, llama(3).base_model)
    assert [(c.module_path, c.reads_input) for c in coders.values()] == [
        (f"layers.{i}", True) for i in range(3)
    ]
    listed = SparseCoderConfig(
        path=(f"saelens:{RELEASE}/blocks.2.hook_resid_pre", f"hf:{REPO}/blocks.0.hook_resid_pre")
    )
    assert hookpoint_names(listed) == (names[2], names[0])
    directions = load_file_coder(listed, names[0]).decoder_directions()  # explain and compare read these
    torch.testing.assert_close(directions, coders[names[0]].decoder_directions())
    with pytest.raises(ConfigError, match="sparse_coder.hookpoints.*lists 1 hookpoints for 3 coders"):
        load_coders(SparseCoderConfig(path=cfg.path, hookpoints=("layers.0",)), llama(3).base_model)


def test_gemma_scope_release(tmp_path, hub_cache):
    """A `gemma_2` release: params.npz read by our loader, hook named from the repo (SAE Lens's rule)."""
    w = random_sae_weights(HIDDEN, 48)
    write_gemmascope(tmp_path / "npz", w)
    put_folder(
        hub_cache, "google/gemma-scope-2b-pt-res", "layer_0/width_16k/average_l0_105", tmp_path / "npz"
    )
    cfg = SparseCoderConfig(path="saelens:gemma-scope-2b-pt-res-canonical/layer_0/width_16k/canonical")
    assert hookpoint_names(cfg) == ("blocks.0.hook_resid_post",)
    (coder,) = load_coders(cfg, llama().base_model).values()
    assert (coder.module_path, coder.reads_input) == ("layers.0", False)
    x = torch.randn(10, HIDDEN, generator=torch.Generator().manual_seed(2))
    pre = x @ w["W_enc"] + w["b_enc"]
    acts = coder.encode(x)
    expected = (pre.relu() * (pre > w["threshold"]))[acts.rows, acts.latents]
    torch.testing.assert_close(acts.values, expected)
    assert len(acts.values) == int(((pre > w["threshold"]) & (pre > 0)).sum()) > 0


def test_missing_from_offline_cache_is_one_line(hub_cache):
    cfg = SparseCoderConfig(path=f"saelens:{RELEASE}/blocks.4.hook_resid_pre")
    with pytest.raises(
        ConfigError, match=rf"saelens:{RELEASE}/blocks.4.hook_resid_pre is not in the local HF hub cache"
    ):
        hookpoint_names(cfg)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("saelens:gpt2-small-res-jbb/blocks.0.hook_resid_pre", "did you mean gpt2-small-res-jb"),
        (f"saelens:{RELEASE}/blocks.0.hook_resid_prex", "has no SAE"),
        (f"saelens:{RELEASE}/nothing_*", "no SAE of release"),
        (
            "saelens:deepseek-r1-distill-llama-8b-qresearch/blocks.19.hook_resid_post",
            "converter 'deepseek_r1'",
        ),
        ("hf:only-org", "hf:<org>/<repo>"),
    ],
)
def test_bad_names(hub_cache, path, message):
    with pytest.raises(ConfigError, match=message):
        hookpoint_names(SparseCoderConfig(path=path))


def test_cache_offline_by_release_name(tmp_path, hub_cache, tiny_model_dir):
    """Done-when: `autointerp cache` with saelens:<release>/<sae_id>, no hookpoints, from the hub cache."""
    fill_release(hub_cache, tmp_path, range(1, 2), context_size=128, prepend_bos=True)
    config = write_config(tmp_path / "config.yaml", tiny_model_dir, tmp_path)
    data = yaml.safe_load(config.read_text())
    data["sparse_coder"] = {"path": f"saelens:{RELEASE}/blocks.1.hook_resid_pre"}
    config.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["cache", str(config)])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "trained on 128-token contexts but cache.ctx_len is 32" in output
    assert "'center_writing_weights': True" in output  # the release's TransformerLens processing
    manifest = json.loads(
        (tmp_path / "run" / "cache" / "blocks.1.hook_resid_pre" / "manifest.json").read_text()
    )
    assert manifest["complete"] and manifest["num_latents"] == 48
    assert (manifest["coder"]["module_path"], manifest["coder"]["reads_input"]) == ("layers.1", True)
    assert manifest["stats"]["nnz"] > 0
    saved = yaml.safe_load((tmp_path / "run" / CONFIG_FILE).read_text())  # what later stages and report read
    assert saved["sparse_coder"]["hookpoints"] == ["blocks.1.hook_resid_pre"]


def test_cache_offline_missing_coder_is_one_line_error(tmp_path, hub_cache, tiny_model_dir):
    config = write_config(tmp_path / "config.yaml", tiny_model_dir, tmp_path)
    data = yaml.safe_load(config.read_text())
    data["sparse_coder"] = {"path": f"saelens:{RELEASE}/blocks.1.hook_resid_pre"}
    config.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["cache", str(config)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("error: sparse_coder.path: saelens:gpt2-small-res-jb/blocks.1.hook_resid_pre")
    assert "not in the local HF hub cache" in lines[0]
