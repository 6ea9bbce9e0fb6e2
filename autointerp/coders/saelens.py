"""SAE Lens folders (`cfg.json` + `sae_weights.safetensors`); the dense encoder shared with Gemma Scope."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import Tensor

from autointerp.coders.base import FileCoder, SparseActivations, file_fingerprint
from autointerp.errors import ConfigError

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
ARCHITECTURES = ("standard", "jumprelu", "topk")
WEIGHT_NAMES = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")


class DenseEncoderCoder(FileCoder):
    """`hidden_pre = (x - b_dec if subtract_b_dec) @ W_enc + b_enc`, then ReLU, JumpReLU or TopK.

    JumpReLU (`threshold` given): `relu(hidden_pre) * (hidden_pre > threshold)`.
    TopK (`k` given): ReLU of the k largest `hidden_pre` per token (optionally scaled by decoder norms first).
    """

    def __init__(
        self,
        hookpoint: str,
        weights: dict[str, Tensor],
        *,
        subtract_b_dec: bool,
        k: int | None = None,
        rescale_by_decoder_norm: bool = False,
        fingerprint: dict[str, object],
    ):
        self.hookpoint = self.module_path = hookpoint
        self.reads_input = False
        self.d_in, self.num_latents = weights["W_enc"].shape
        super().__init__(weights, fingerprint)
        self.subtract_b_dec = subtract_b_dec
        self.k = k
        self.rescale_by_decoder_norm = rescale_by_decoder_norm

    def encode(self, x: Tensor) -> SparseActivations:
        w = self.weights
        x = x.to(w["W_enc"].dtype)
        if self.subtract_b_dec:
            x = x - w["b_dec"]
        pre = x @ w["W_enc"] + w["b_enc"]
        if self.k is not None:
            if self.rescale_by_decoder_norm:
                pre = pre * w["W_dec"].norm(dim=-1)
            values, indices = pre.topk(self.k, dim=-1, sorted=False)
            return SparseActivations.from_topk(values.relu().float(), indices)
        acts = pre.relu()
        if "threshold" in w:
            acts = acts * (pre > w["threshold"])
        return SparseActivations.from_dense(acts.float())


def detect(folder: Path) -> bool:
    return (folder / CFG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


def load(folder: Path, hookpoint: str) -> DenseEncoderCoder:
    """Load an SAE Lens SAE; `hook_name` is ignored: the hookpoint is the HF module path."""
    cfg = json.loads((folder / CFG_FILE).read_text())
    architecture = _architecture(cfg, folder)
    _check_normalization(cfg, folder)
    weights = load_file(folder / WEIGHTS_FILE)
    if architecture == "jumprelu" and "threshold" not in weights:
        weights["threshold"] = weights.pop("log_threshold").exp()
    if architecture != "jumprelu":
        weights.pop("threshold", None)
    return DenseEncoderCoder(
        hookpoint,
        {name: weights[name] for name in WEIGHT_NAMES if name in weights},
        subtract_b_dec=cfg.get("apply_b_dec_to_input", True),
        k=_topk_k(cfg) if architecture == "topk" else None,
        rescale_by_decoder_norm=cfg.get("rescale_acts_by_decoder_norm", False),
        fingerprint=file_fingerprint("saelens", folder, CFG_FILE, WEIGHTS_FILE),
    )


def _architecture(cfg: dict[str, Any], folder: Path) -> str:
    """`architecture` (SAE Lens >= 6) or, in older files, `activation_fn_str` relu / topk."""
    architecture = cfg.get("architecture")
    if architecture is None:
        activation_fn = cfg.get("activation_fn_str", cfg.get("activation_fn"))
        architecture = "topk" if activation_fn == "topk" else "standard"
    if "transcoder" in architecture:
        raise ConfigError(
            "sparse_coder.path",
            f"{folder} is an SAE Lens transcoder ({architecture}), which is not supported: "
            "use an SAE, or a sparsify-format transcoder",
        )
    if architecture not in ARCHITECTURES:
        raise ConfigError(
            "sparse_coder.path",
            f"{folder} has SAE Lens architecture {architecture!r}; supported: {', '.join(ARCHITECTURES)}",
        )
    return architecture


def _topk_k(cfg: dict[str, Any]) -> int:
    return int(cfg["k"] if "k" in cfg else cfg["activation_fn_kwargs"]["k"])


def _check_normalization(cfg: dict[str, Any], folder: Path) -> None:
    norm = cfg.get("normalize_activations")
    if norm not in (None, False, "none"):
        raise ConfigError(
            "sparse_coder.path",
            f"{folder} uses normalize_activations={norm!r}, which is not supported: "
            "use an SAE with normalisation folded into its weights (normalize_activations: none)",
        )
