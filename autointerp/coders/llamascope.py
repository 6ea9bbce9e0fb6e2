"""Llama Scope folders (huggingface.co/fnlp/Llama3_1-8B-Base-LX{R,A,M,TC}-{8,32}x).

Layout, as read by SAE Lens 6.54 (`get_llama_scope_config_from_hf`, `llama_scope_sae_huggingface_loader`):
`<folder>/hyperparams.json` (`d_model`, `d_sae`, `hook_point_in`, `jump_relu_threshold`,
`dataset_average_activation_norm: {in, out}`) and `<folder>/checkpoints/final.safetensors` with
`encoder.weight [d_sae, d_model]`, `encoder.bias`, `decoder.weight [d_model, d_sae]`, `decoder.bias`.

Encoding matches SAE Lens's `from_pretrained` of a Llama Scope release: the input is scaled by
`s = sqrt(d_model) / dataset_average_activation_norm.in` (folded into the weights), `b_dec` is not
subtracted, and the scalar JumpReLU threshold is `jump_relu_threshold * s`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from autointerp.coders.base import CoderFiles, HookInfo
from autointerp.coders.dense import DenseCoder, EncoderSpec, fold_scaling_factor

HYPERPARAMS_FILE = "hyperparams.json"
WEIGHTS_FILE = "checkpoints/final.safetensors"
CONTEXT_SIZE = 1024
"""Training context SAE Lens records for Llama Scope."""


def detect(folder: Path) -> bool:
    return (folder / HYPERPARAMS_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


def load(folder: Path, hookpoint: str, scaling_factor: float | None = None) -> DenseCoder:
    """`scaling_factor` is the release's `norm_scaling_factor`; by default from the hyperparameters."""
    hp = json.loads((folder / HYPERPARAMS_FILE).read_text())
    own_factor = hp["d_model"] ** 0.5 / hp["dataset_average_activation_norm"]["in"]
    raw = load_file(folder / WEIGHTS_FILE)
    weights = {
        "W_enc": raw["encoder.weight"].T.float(),
        "b_enc": raw["encoder.bias"].float(),
        "W_dec": raw["decoder.weight"].T.float(),
        "b_dec": raw["decoder.bias"].float(),
    }
    weights["threshold"] = torch.full_like(weights["b_enc"], hp["jump_relu_threshold"] * own_factor)
    fold_scaling_factor(weights, own_factor if scaling_factor is None else scaling_factor)
    hook = hook_info(folder)
    spec = EncoderSpec(activation="jumprelu", subtract_b_dec=False)
    files = CoderFiles("llamascope", folder, (HYPERPARAMS_FILE, WEIGHTS_FILE))
    return DenseCoder(hookpoint, weights, spec, files, hook)


def hook_info(folder: Path) -> HookInfo:
    """`hook_point_in` of the hyperparameters (a TransformerLens name)."""
    hp = json.loads((folder / HYPERPARAMS_FILE).read_text())
    return HookInfo(hook_name=hp.get("hook_point_in"), context_size=CONTEXT_SIZE, prepend_bos=True)
