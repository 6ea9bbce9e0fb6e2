"""SAE Lens, Gemma Scope 2 and Llama Scope coders against SAE Lens's own `encode`.

Coders are built by SAE Lens (its config classes with random weights, saved by its own `save_model` /
`save_inference_model`); formats SAE Lens cannot write are written in their published layout and read by
SAE Lens's own converters from a local hub cache. Tolerance: `assert_close(atol=1e-5, rtol=1e-5)` on the
dense activations (float32).
"""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub
import pytest
import torch
import transformers
from sae_lens import (
    SAE,
    BatchTopKTrainingSAE,
    BatchTopKTrainingSAEConfig,
    MatryoshkaBatchTopKTrainingSAE,
    MatryoshkaBatchTopKTrainingSAEConfig,
)
from sae_lens.loading import pretrained_sae_loaders
from sae_lens.registry import get_sae_class
from sae_lens.saes.sae import SAEMetadata
from sae_lens.training.activation_scaler import ActivationScaler, ActivationWhitening
from safetensors import safe_open
from safetensors.torch import save_file

from autointerp.coders import load_coders
from autointerp.coders.base import SparseActivations
from autointerp.config import SparseCoderConfig
from autointerp.errors import ConfigError
from tests.coder_factories import write_gemma_scope_2
from tests.hub_cache import put_folder

D_IN, D_SAE, TOKENS = 32, 64, 40
SAE_ARCHS = ("standard", "topk", "jumprelu", "gated")
TRANSCODER_ARCHS = ("transcoder", "skip_transcoder", "jumprelu_transcoder", "jumprelu_skip_transcoder")
NORMS = ("none", "constant_norm_rescale", "layer_norm", "expected_average_only_in", "covariance_whitening")


def dense(acts: SparseActivations, n: int = D_SAE) -> torch.Tensor:
    out = torch.zeros(TOKENS, n)
    out[acts.rows, acts.latents] = acts.values
    return out


def assert_same(ours: SparseActivations, reference: torch.Tensor) -> None:
    """Equal to SAE Lens, and a meaningful comparison: some latents fire, most do not."""
    torch.testing.assert_close(dense(ours, reference.shape[1]), reference.float(), atol=1e-5, rtol=1e-5)
    firing = (reference != 0).float().mean()
    assert 0 < firing < 0.9, f"degenerate reference ({firing:.2f} of activations nonzero)"


@pytest.fixture(scope="module")
def model() -> transformers.LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        hidden_size=D_IN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=100,
    )
    return transformers.LlamaForCausalLM(cfg).eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(TOKENS, D_IN, generator=torch.Generator().manual_seed(1)) * 2 + 0.5


def randomize(sae: torch.nn.Module, seed: int) -> None:
    """Random weights with biases and thresholds that leave a sparse, nonempty code."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sae.named_parameters():
            values = torch.randn(param.shape, generator=gen)
            if name == "threshold":
                values = values.abs() * 0.3
            elif name.startswith("b_") or name == "r_mag":
                values = values * 0.2
            else:
                values = values / param.shape[0] ** 0.5
            param.copy_(values)


def build(arch: str, norm: str = "none", hook: str = "blocks.1.hook_resid_post", seed: int = 0) -> SAE:
    """An SAE Lens inference SAE of `arch` with random weights."""
    sae_cls, cfg_cls = get_sae_class(arch)
    kwargs: dict = {"d_in": D_IN, "d_sae": D_SAE, "normalize_activations": norm}
    if arch == "topk":
        kwargs["k"] = 6
    if "transcoder" in arch:
        kwargs.update(d_out=D_IN, apply_b_dec_to_input=False)
        hook = "blocks.1.ln2.hook_normalized"
    cfg = cfg_cls(**kwargs, metadata=SAEMetadata(hook_name=hook, context_size=32, prepend_bos=True))
    sae = sae_cls(cfg)
    randomize(sae, seed)
    return sae.eval()


def load_ours(folder: Path, model: transformers.LlamaForCausalLM, **kw):
    coders = load_coders(SparseCoderConfig(path=str(folder), **kw), model.model)
    (coder,) = coders.values()
    return coder


def add_normalization(sae: SAE, folder: Path, norm: str) -> SAE:
    """Write the statistics SAE Lens's trainer saves beside a checkpoint; return its folded reference."""
    reference = SAE.load_from_disk(folder)
    if norm == "expected_average_only_in":
        ActivationScaler(scaling_factor=0.37).save(str(folder / "activation_scaler.json"))
        reference.fold_activation_norm_scaling_factor(0.37)
    elif norm == "covariance_whitening":
        gen = torch.Generator().manual_seed(9)
        matrix = torch.eye(D_IN) + 0.1 * torch.randn(D_IN, D_IN, generator=gen)
        whitening = ActivationWhitening(
            torch.randn(D_IN, generator=gen) * 0.3, matrix, torch.linalg.inv(matrix)
        )
        ActivationScaler(whitening=whitening).save(str(folder / "activation_scaler.json"))
        reference.fold_activation_whitening(whitening.mean, whitening.matrix, whitening.inverse_matrix)
    return reference


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("arch", SAE_ARCHS + TRANSCODER_ARCHS)
def test_saelens_architectures(tmp_path, model, x, arch, norm):
    if "transcoder" in arch and norm == "covariance_whitening":
        pytest.skip("SAE Lens cannot fold a whitening into a transcoder (b_dec is in the output space)")
    sae = build(arch, norm, seed=hash(arch) % 1000)
    sae.save_model(tmp_path)
    reference = add_normalization(sae, tmp_path, norm)
    coder = load_ours(tmp_path, model)
    with torch.no_grad():
        assert_same(coder.encode(x), reference.encode(x))
    assert coder.reads_input == ("transcoder" in arch)
    expected_tap = ("layers.1.mlp", True) if "transcoder" in arch else ("layers.1", False)
    assert (coder.module_path, coder.reads_input) == expected_tap
    assert coder.decoder_directions().shape == (D_SAE, D_IN)


@pytest.mark.parametrize("matryoshka", [False, True], ids=["batchtopk", "matryoshka_batchtopk"])
def test_batchtopk_checkpoints_and_inference_files(tmp_path, model, x, matryoshka):
    """BatchTopK: the training checkpoint (`save_model`) and the JumpReLU inference file match SAE Lens."""
    common = {
        "d_in": D_IN,
        "d_sae": D_SAE,
        "k": 6.0,
        "metadata": SAEMetadata(hook_name="blocks.1.hook_resid_post"),
    }
    if matryoshka:
        sae = MatryoshkaBatchTopKTrainingSAE(
            MatryoshkaBatchTopKTrainingSAEConfig(**common, matryoshka_widths=[16, 64])
        )
    else:
        sae = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(**common))
    randomize(sae, seed=5)
    sae.topk_threshold.fill_(0.4)
    sae.save_inference_model(tmp_path / "inference")
    sae.save_model(tmp_path / "checkpoint")
    assert json.loads((tmp_path / "checkpoint" / "cfg.json").read_text())["architecture"] != "jumprelu"
    reference = SAE.load_from_disk(tmp_path / "inference")
    with torch.no_grad():
        expected = reference.encode(x)
        for folder in ("inference", "checkpoint"):
            assert_same(load_ours(tmp_path / folder, model).encode(x), expected)


def test_pre_6_config(tmp_path, model, x):
    """A pre-6.0 folder (flat keys, `hook_point`, `activation_fn_str: topk`) as SAE Lens converts it."""
    sae = build("topk")
    sae.save_model(tmp_path)
    legacy = {
        "d_in": D_IN,
        "d_sae": D_SAE,
        "dtype": "float32",
        "device": "cpu",
        "hook_point": "blocks.0.hook_resid_pre",
        "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": 6},
        "normalize_activations": False,
        "sae_lens_training_version": "3.0.0",
    }
    (tmp_path / "cfg.json").write_text(json.dumps(legacy))
    coder = load_ours(tmp_path, model)
    with torch.no_grad():
        assert_same(coder.encode(x), SAE.load_from_disk(tmp_path).encode(x))
    assert (coder.hookpoint, coder.module_path, coder.reads_input) == (
        "blocks.0.hook_resid_pre",
        "layers.0",
        True,
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"architecture": "temporal"}, "'temporal'; supported: standard"),
        ({"metadata": {"hook_name": "blocks.1.attn.hook_z", "hook_head_index": 2}}, "one attention head"),
    ],
)
def test_unsupported_files(tmp_path, model, change, message):
    build("standard").save_model(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    (tmp_path / "cfg.json").write_text(json.dumps({**cfg, **change}))
    with pytest.raises(ConfigError, match=f"sparse_coder.path.*{message}"):
        load_ours(tmp_path, model)


def test_whitening_without_statistics_is_refused(tmp_path, model):
    build("standard", "covariance_whitening").save_model(tmp_path)
    with pytest.raises(ConfigError, match="covariance_whitening without activation_whitening"):
        load_ours(tmp_path, model)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty HF hub cache, offline, used by huggingface_hub for the test."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def local_shapes(cache: Path):
    """SAE Lens reads Gemma Scope 2 tensor shapes over HTTP; read them from the cached file instead."""

    def shapes(repo_id: str, filename: str) -> dict[str, list[int]]:
        path = huggingface_hub.hf_hub_download(repo_id, filename, cache_dir=str(cache))
        with safe_open(path, framework="pt") as f:
            return {name: list(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118

    return shapes


@pytest.mark.parametrize(
    ("release", "sae_id", "subfolder", "transcoder"),
    [
        (
            "gemma-scope-2-270m-pt-res-all",
            "layer_1_width_16k_l0_small",
            "resid_post_all/layer_1_width_16k_l0_small",
            False,
        ),
        (
            "gemma-scope-2-270m-pt-transcoders-all",
            "layer_1_width_16k_l0_small_affine",
            "transcoder_all/layer_1_width_16k_l0_small_affine",
            True,
        ),
    ],
    ids=["resid_post", "affine_skip_transcoder"],
)
def test_gemma_scope_2(tmp_path, hub_cache, monkeypatch, model, x, release, sae_id, subfolder, transcoder):
    write_gemma_scope_2(tmp_path / "files", D_IN, D_SAE, transcoder, seed=3)
    put_folder(hub_cache, "google/gemma-scope-2-270m-pt", subfolder, tmp_path / "files")
    monkeypatch.setattr(pretrained_sae_loaders, "get_safetensors_tensor_shapes", local_shapes(hub_cache))
    reference = SAE.from_pretrained(release, sae_id)
    arch = "jumprelu_skip_transcoder" if transcoder else "jumprelu"
    assert reference.cfg.architecture() == arch
    coder = load_ours(Path(f"saelens:{release}/{sae_id}"), model)
    with torch.no_grad():
        assert_same(coder.encode(x), reference.encode(x))
    expected = ("layers.1.mlp", True) if transcoder else ("layers.1", False)  # a Llama: no Gemma norms
    assert (coder.module_path, coder.reads_input) == expected


def test_llama_scope(tmp_path, hub_cache, model, x):
    """Llama Scope's published layout, read by SAE Lens's `llama_scope` converter and by ours."""
    folder = tmp_path / "files"
    (folder / "checkpoints").mkdir(parents=True)
    gen = torch.Generator().manual_seed(4)
    save_file(
        {
            "encoder.weight": torch.randn(D_SAE, D_IN, generator=gen) / D_IN**0.5,
            "encoder.bias": torch.randn(D_SAE, generator=gen) * 0.2,
            "decoder.weight": torch.randn(D_IN, D_SAE, generator=gen) / D_SAE**0.5,
            "decoder.bias": torch.randn(D_IN, generator=gen) * 0.2,
        },
        folder / "checkpoints" / "final.safetensors",
    )
    hyperparams = {
        "d_model": D_IN,
        "d_sae": D_SAE,
        "hook_point_in": "blocks.0.hook_resid_post",
        "hook_point_out": "blocks.0.hook_resid_post",
        "jump_relu_threshold": 0.004,
        "dataset_average_activation_norm": {"in": 0.1, "out": 0.1},
    }
    (folder / "hyperparams.json").write_text(json.dumps(hyperparams))
    put_folder(hub_cache, "fnlp/Llama3_1-8B-Base-LXR-8x", "Llama3_1-8B-Base-L0R-8x", folder)
    reference = SAE.from_pretrained("llama_scope_lxr_8x", "l0r_8x")
    coder = load_ours(Path("saelens:llama_scope_lxr_8x/l0r_8x"), model)
    with torch.no_grad():
        assert_same(coder.encode(x), reference.encode(x))
    assert (coder.hookpoint, coder.module_path) == ("blocks.0.hook_resid_post", "layers.0")


def test_hook_z_sae_reads_the_attention_output_projection_input(tmp_path, model, x):
    """A `reshape_activations: hook_z` SAE: SAE Lens flattens [heads, d_head]; HF's o_proj input is flat."""
    sae_cls, cfg_cls = get_sae_class("standard")
    metadata = SAEMetadata(hook_name="blocks.1.attn.hook_z")
    sae = sae_cls(cfg_cls(d_in=D_IN, d_sae=D_SAE, reshape_activations="hook_z", metadata=metadata))
    randomize(sae, seed=7)
    sae.save_model(tmp_path)
    coder = load_ours(tmp_path, model)
    assert (coder.module_path, coder.reads_input) == ("layers.1.self_attn.o_proj", True)
    with torch.no_grad():
        assert_same(coder.encode(x), SAE.load_from_disk(tmp_path).encode(x.reshape(TOKENS, 4, 8)))
