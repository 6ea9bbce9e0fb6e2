"""Writers of small random coder folders in the Gemma Scope layout, for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


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
