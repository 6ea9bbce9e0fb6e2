"""Writers of small random coder folders in the SAE Lens and Gemma Scope layouts, for tests."""

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


def write_saelens(folder: Path, weights: dict[str, torch.Tensor], **cfg: object) -> Path:
    """A folder as `sae_lens.SAE.save_model` writes it (cfg.json + sae_weights.safetensors)."""
    folder.mkdir(parents=True, exist_ok=True)
    d_in, d_sae = weights["W_enc"].shape
    full_cfg = {
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {"sae_lens_version": "6.54.12", "hook_name": "blocks.1.hook_resid_post"},
        "architecture": "standard",
        **cfg,
    }
    save_file({name: t.contiguous() for name, t in weights.items()}, folder / "sae_weights.safetensors")
    (folder / "cfg.json").write_text(json.dumps(full_cfg))
    return folder


def write_gemmascope(folder: Path, weights: dict[str, torch.Tensor]) -> Path:
    """A folder holding `params.npz` as published by Gemma Scope."""
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "params.npz", **{name: t.numpy() for name, t in weights.items()})
    return folder
