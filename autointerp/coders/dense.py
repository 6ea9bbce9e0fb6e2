"""The dense-encoder coder shared by SAE Lens, Gemma Scope and Llama Scope files.

`encode` follows SAE Lens 6 (`sae_lens/saes/*.py`): `process_sae_in` (run-time normalisation, then
`- b_dec` when `apply_b_dec_to_input`), the affine encoder, then the architecture's activation.
Normalisations that SAE Lens folds into the weights at load time (a constant scaling factor, a whitening)
are folded by the loaders before the coder is built, so `encode` only sees the run-time ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from autointerp.coders.base import CoderFiles, FileCoder, HookInfo, SparseActivations

Activation = Literal["relu", "jumprelu", "topk", "gated"]
RunTimeNorm = Literal["none", "constant_norm_rescale", "layer_norm"]
LAYER_NORM_EPS = 1e-5
"""`eps` of SAE Lens's `run_time_activation_ln_in`."""


@dataclass(frozen=True)
class EncoderSpec:
    """How a dense coder encodes, independent of its weights."""

    activation: Activation
    subtract_b_dec: bool
    normalize: RunTimeNorm = "none"
    k: int | None = None
    """TopK only: latents kept per token."""
    rescale_by_decoder_norm: bool = False
    """TopK only: rank `hidden_pre * ||W_dec||` (SAE Lens `rescale_acts_by_decoder_norm`)."""
    transcoder: bool = False
    """Transcoders read their module's input and decode into another space (`b_dec` is not subtracted)."""


class DenseCoder(FileCoder):
    """`W_enc [d_in, n]`, `b_enc [n]`, `W_dec [n, d_out]`, `b_dec [d_out]`; `threshold` or gated weights."""

    def __init__(
        self,
        hookpoint: str,
        weights: dict[str, Tensor],
        spec: EncoderSpec,
        files: CoderFiles,
        hook: HookInfo | None = None,
    ):
        self.hookpoint = self.module_path = hookpoint
        self.reads_input = spec.transcoder
        self.d_in, self.num_latents = weights["W_enc"].shape
        super().__init__(weights, files)
        self.spec = spec
        self.hook = hook or HookInfo()

    def encode(self, x: Tensor) -> SparseActivations:
        w, spec = self.weights, self.spec
        x = _normalize(x.to(w["W_enc"].dtype), spec.normalize, self.d_in)
        if spec.subtract_b_dec and not spec.transcoder:
            x = x - w["b_dec"]
        if spec.activation == "gated":
            gate = x @ w["W_enc"] + w["b_gate"] > 0
            magnitude = (x @ (w["W_enc"] * w["r_mag"].exp()) + w["b_mag"]).relu()
            return SparseActivations.from_dense((magnitude * gate).float())
        pre = x @ w["W_enc"] + w["b_enc"]
        if spec.activation == "topk":
            if spec.rescale_by_decoder_norm:
                pre = pre * w["W_dec"].norm(dim=-1)
            assert spec.k is not None  # TopK specs carry their k
            values, indices = pre.topk(spec.k, dim=-1, sorted=False)
            return SparseActivations.from_topk(values.relu().float(), indices)
        acts = pre.relu()
        if spec.activation == "jumprelu":
            acts = acts * (pre > w["threshold"])
        return SparseActivations.from_dense(acts.float())


def _normalize(x: Tensor, mode: RunTimeNorm, d_in: int) -> Tensor:
    """SAE Lens's `run_time_activation_norm_fn_in` for the run-time modes."""
    if mode == "constant_norm_rescale":
        return x * (d_in**0.5 / x.norm(dim=-1, keepdim=True))
    if mode == "layer_norm":
        x = x - x.mean(dim=-1, keepdim=True)
        return x / (x.std(dim=-1, keepdim=True) + LAYER_NORM_EPS)
    return x


def fold_scaling_factor(weights: dict[str, Tensor], factor: float) -> None:
    """SAE Lens `fold_activation_norm_scaling_factor`: the coder then reads unscaled activations."""
    weights["W_enc"] = weights["W_enc"] * factor
    weights["W_dec"] = weights["W_dec"] / factor
    weights["b_dec"] = weights["b_dec"] / factor


def fold_whitening(weights: dict[str, Tensor], spec: EncoderSpec, whitening: dict[str, Tensor]) -> None:
    """SAE Lens `fold_activation_whitening` of `z = (x - mean) @ matrix` into the weights."""
    mean, matrix, inverse = whitening["mean"], whitening["matrix"], whitening["inverse_matrix"]
    dtype = torch.promote_types(weights["W_enc"].dtype, matrix.dtype)
    original = weights["W_enc"].dtype
    w_enc = matrix.to(dtype) @ weights["W_enc"].to(dtype)
    if not spec.subtract_b_dec:
        shift = mean.to(dtype) @ w_enc
        if spec.activation == "gated":
            weights["b_gate"] = (weights["b_gate"] - shift).to(original)
            weights["b_mag"] = (weights["b_mag"] - shift * weights["r_mag"].exp()).to(original)
        else:
            weights["b_enc"] = (weights["b_enc"] - shift).to(original)
    weights["W_enc"] = w_enc.to(original)
    weights["W_dec"] = (weights["W_dec"].to(dtype) @ inverse.to(dtype)).to(original)
    weights["b_dec"] = (weights["b_dec"].to(dtype) @ inverse.to(dtype) + mean.to(dtype)).to(original)
