"""SAE Lens folders (`cfg.json` + `sae_weights.safetensors`, as `SAE.save_model` writes them).

Architectures: `standard`, `jumprelu`, `topk`, `gated`, the transcoders (`transcoder`, `skip_transcoder`,
`jumprelu_transcoder`, `jumprelu_skip_transcoder`) and the training checkpoints of `batchtopk` /
`matryoshka_batchtopk` (their inference files are `jumprelu`). Config keys follow SAE Lens 6 and its
pre-6 converter `handle_pre_6_0_config` (`sae_lens/loading/pretrained_sae_loaders.py`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from autointerp.coders.base import CoderFiles, HookInfo
from autointerp.coders.dense import (
    Activation,
    DenseCoder,
    EncoderSpec,
    RunTimeNorm,
    fold_scaling_factor,
    fold_whitening,
)
from autointerp.errors import ConfigError

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SCALER_FILE = "activation_scaler.json"
WHITENING_FILE = "activation_whitening.safetensors"
ACTIVATIONS: dict[str, Activation] = {
    "standard": "relu",
    "jumprelu": "jumprelu",
    "topk": "topk",
    "gated": "gated",
    "batchtopk": "jumprelu",
    "matryoshka_batchtopk": "jumprelu",
    "transcoder": "relu",
    "skip_transcoder": "relu",
    "jumprelu_transcoder": "jumprelu",
    "jumprelu_skip_transcoder": "jumprelu",
}
NORMALIZATIONS = (
    "none",
    "expected_average_only_in",
    "constant_norm_rescale",
    "layer_norm",
    "covariance_whitening",
)
WEIGHT_NAMES = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "b_gate", "b_mag", "r_mag")


def detect(folder: Path) -> bool:
    return (folder / CFG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


def read_cfg(folder: Path) -> dict[str, Any]:
    """`cfg.json` with pre-6 keys renamed and the metadata flattened into the top level."""
    cfg = json.loads((folder / CFG_FILE).read_text())
    cfg = {**cfg.get("metadata", {}), **{k: v for k, v in cfg.items() if k != "metadata"}}
    cfg.setdefault("hook_name", cfg.get("hook_point"))
    cfg.setdefault("hook_head_index", cfg.get("hook_point_head_index"))
    if not cfg.get("architecture"):
        activation = cfg.get("activation_fn_str", cfg.get("activation_fn"))
        cfg["architecture"] = "topk" if activation == "topk" else "standard"
    if cfg["architecture"] == "topk" and "k" not in cfg:
        cfg["k"] = cfg["activation_fn_kwargs"]["k"]
    norm = cfg.get("normalize_activations")
    if norm is None or isinstance(norm, bool):
        cfg["normalize_activations"] = "expected_average_only_in" if norm else "none"
    return cfg


def hook_info(cfg: dict[str, Any]) -> HookInfo:
    """The hook names and training context recorded in a (flattened) SAE Lens config."""
    return HookInfo(
        hook_name=cfg.get("hook_name"),
        hf_hook_name=cfg.get("hf_hook_name"),
        context_size=cfg.get("context_size"),
        prepend_bos=cfg.get("prepend_bos"),
    )


def load(
    folder: Path,
    hookpoint: str,
    scaling_factor: float | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> DenseCoder:
    """Load an SAE Lens coder; a release may add `norm_scaling_factor` and `model_from_pretrained_kwargs`."""
    cfg = read_cfg(folder)
    architecture = _checked_architecture(cfg, folder)
    weights = load_file(folder / WEIGHTS_FILE)
    if "log_threshold" in weights:
        weights["threshold"] = weights.pop("log_threshold").exp()
    spec = EncoderSpec(
        activation=ACTIVATIONS[architecture],
        subtract_b_dec=bool(cfg.get("apply_b_dec_to_input", True)),
        normalize=_run_time_norm(cfg["normalize_activations"]),
        k=int(cfg["k"]) if architecture == "topk" else None,
        rescale_by_decoder_norm=bool(cfg.get("rescale_acts_by_decoder_norm", False))
        and architecture == "topk",
        transcoder="transcoder" in architecture,
    )
    if architecture in ("batchtopk", "matryoshka_batchtopk"):
        _batchtopk_as_jumprelu(weights, cfg)
    hook = hook_info(cfg)
    processing = {**(cfg.get("model_from_pretrained_kwargs") or {}), **(model_kwargs or {})}
    if processing:
        hook.notes.append(
            f"{folder}: the coder was trained on a TransformerLens model loaded with {processing}, whose "
            "activations differ from the HF model's (e.g. centred writing weights): encodings are approximate"
        )
    folded = _fold_normalization(weights, spec, cfg, folder, scaling_factor, hook)
    kept = {name: weights[name] for name in WEIGHT_NAMES if name in weights}
    if spec.activation != "jumprelu":
        kept.pop("threshold", None)
    files = CoderFiles("saelens", folder, (CFG_FILE, WEIGHTS_FILE), folded)
    return DenseCoder(hookpoint, kept, spec, files, hook)


def _checked_architecture(cfg: dict[str, Any], folder: Path) -> str:
    """The architecture, after refusing what this loader cannot encode faithfully."""
    architecture = cfg["architecture"]
    if architecture not in ACTIVATIONS:
        raise ConfigError(
            "sparse_coder.path",
            f"{folder} has SAE Lens architecture {architecture!r}; supported: {', '.join(ACTIVATIONS)}",
        )
    if cfg.get("hook_head_index") is not None:
        raise ConfigError(
            "sparse_coder.path",
            f"{folder} reads one attention head (hook_head_index={cfg['hook_head_index']}), "
            "which is not supported: use a coder of the whole hook",
        )
    if cfg["normalize_activations"] not in NORMALIZATIONS:
        raise ConfigError(
            "sparse_coder.path",
            f"{folder} has normalize_activations={cfg['normalize_activations']!r}; "
            f"supported: {', '.join(NORMALIZATIONS)}",
        )
    return architecture


def _run_time_norm(mode: str) -> RunTimeNorm:
    if mode == "constant_norm_rescale":
        return "constant_norm_rescale"
    return "layer_norm" if mode == "layer_norm" else "none"


def _batchtopk_as_jumprelu(weights: dict[str, Tensor], cfg: dict[str, Any]) -> None:
    """A BatchTopK training checkpoint as the JumpReLU SAE that SAE Lens's `save_inference_model` writes."""
    if cfg.get("rescale_acts_by_decoder_norm", True):
        norms = weights["W_dec"].norm(dim=-1)
        weights["b_enc"] = weights["b_enc"] * norms
        weights["W_dec"] = weights["W_dec"] / norms[:, None]
        weights["W_enc"] = weights["W_enc"] * norms
    threshold = weights.pop("topk_threshold").item()
    weights["threshold"] = torch.full_like(weights["b_enc"], threshold)


def _fold_normalization(
    weights: dict[str, Tensor],
    spec: EncoderSpec,
    cfg: dict[str, Any],
    folder: Path,
    scaling_factor: float | None,
    hook: HookInfo,
) -> dict[str, object]:
    """Fold `expected_average_only_in` / `covariance_whitening` statistics, as SAE Lens does on loading.

    Returns what identifies the folded statistics, for the coder's fingerprint."""
    mode = cfg["normalize_activations"]
    scaler = json.loads((folder / SCALER_FILE).read_text()) if (folder / SCALER_FILE).is_file() else {}
    if mode == "expected_average_only_in":
        factor = scaling_factor if scaling_factor is not None else scaler.get("scaling_factor")
        if factor is None:
            hook.notes.append(
                f"{folder}: normalize_activations is expected_average_only_in but no norm_scaling_factor "
                "is known (none in the release directory or activation_scaler.json); activations are "
                "encoded unscaled, as SAE Lens does"
            )
            return {}
        fold_scaling_factor(weights, float(factor))
        return {"norm_scaling_factor": float(factor)}
    elif mode == "covariance_whitening":
        if spec.transcoder or not (folder / WHITENING_FILE).is_file():
            raise ConfigError(
                "sparse_coder.path",
                f"{folder} uses normalize_activations=covariance_whitening without {WHITENING_FILE} "
                "(or is a transcoder): save the SAE with the whitening folded in",
            )
        fold_whitening(weights, spec, load_file(folder / WHITENING_FILE))
        return {"whitening_bytes": (folder / WHITENING_FILE).stat().st_size}
    return {}
