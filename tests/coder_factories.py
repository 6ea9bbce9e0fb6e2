"""Writers of small random coder folders in the Gemma Scope (1 and 2) layouts, for tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file


def random_sae_weights(d_in: int, d_sae: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """W_enc [d, n], b_enc [n], W_dec [n, d], b_dec [d], threshold [n] (positive, so JumpReLU gates)."""
    gen = torch.Generator().manual_seed(seed)
    return {
        "W_enc": torch.randn(d_in, d_sae, generator=gen) / d_in**0.5,
        "b_enc": torch.randn(d_sae, generator=gen) * 0.1,
        "W_dec": torch.randn(d_sae, d_in, generator=gen) / d_sae**0.5,
        "b_dec": torch.randn(d_in, generator=gen) * 0.1,
        "threshold": torch.rand(d_sae, generator=gen) * 0.5,
    }


def write_gemmascope(folder: Path, weights: dict[str, torch.Tensor]) -> Path:
    """A folder holding `params.npz` as published by Gemma Scope."""
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "params.npz", **{name: t.numpy() for name, t in weights.items()})
    return folder


def write_gemma_scope_2(folder: Path, d_in: int, d_sae: int, transcoder: bool, seed: int) -> None:
    """`params.safetensors` + `config.json` as in huggingface.co/google/gemma-scope-2-270m-pt
    (key names and config fields as SAE Lens's `gemma_3` loader reads them)."""
    gen = torch.Generator().manual_seed(seed)
    params = {
        "w_enc": torch.randn(d_in, d_sae, generator=gen) / d_in**0.5,
        "w_dec": torch.randn(d_sae, d_in, generator=gen) / d_sae**0.5,
        "b_enc": torch.randn(d_sae, generator=gen) * 0.2,
        "b_dec": torch.randn(d_in, generator=gen) * 0.2,
        "threshold": torch.rand(d_sae, generator=gen) * 0.4,
    }
    config = {"architecture": "jump_relu", "model_name": "gemma-v3-270m-pt", "width": d_sae, "l0": 10}
    if transcoder:
        params["affine_skip_connection"] = torch.randn(d_in, d_in, generator=gen) * 0.1
        config.update(
            hf_hook_point_in="model.layers.1.pre_feedforward_layernorm.output",
            hf_hook_point_out="model.layers.1.post_feedforward_layernorm.output",
            affine_connection=True,
        )
    else:
        config["hf_hook_point_in"] = "model.layers.1.output"
    folder.mkdir(parents=True)
    save_file(params, folder / "params.safetensors")
    (folder / "config.json").write_text(json.dumps(config))
