"""Gemma Scope folders: `params.npz` of a JumpReLU SAE that does not subtract `b_dec` from its input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from autointerp.coders.base import file_fingerprint
from autointerp.coders.saelens import DenseEncoderCoder

PARAMS_FILE = "params.npz"
PARAM_NAMES = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")


def detect(folder: Path) -> bool:
    return (folder / PARAMS_FILE).is_file()


def load(folder: Path, hookpoint: str) -> DenseEncoderCoder:
    """`acts = relu(pre) * (pre > threshold)` with `pre = x @ W_enc + b_enc`, (Gemma Scope tutorial)."""
    with np.load(folder / PARAMS_FILE) as params:
        weights = {name: torch.from_numpy(np.array(params[name])) for name in PARAM_NAMES}
    return DenseEncoderCoder(
        hookpoint,
        weights,
        subtract_b_dec=False,
        fingerprint=file_fingerprint("gemmascope", folder, None, PARAMS_FILE),
    )
