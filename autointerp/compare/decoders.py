"""Decoder directions of a run's coder: a `decoder.safetensors` beside the cache, else the coder files."""

from __future__ import annotations

import numpy as np
import torch
from safetensors import safe_open

from autointerp.cache import CacheReader
from autointerp.config import FORMATS_WITHOUT_PATH, RunConfig
from autointerp.errors import UserError

DECODER_FILE = "decoder.safetensors"
"""Optional file in `cache/<hookpoint>/` holding "W_dec" [num_latents, d]; used before the coder files."""


def decoder_directions(
    reader: CacheReader, config: RunConfig | None, hookpoint: str
) -> tuple[np.ndarray | None, str]:
    """Float32 [num_latents, d] and "", or None and why there are none (no decoder, unreadable files)."""
    path = reader.dir / DECODER_FILE
    if path.is_file():
        with safe_open(str(path), framework="pt") as f:
            directions: torch.Tensor | None = f.get_tensor("W_dec")
    elif config is None:
        return None, "no config.yaml in the run directory to find the coder"
    elif config.sparse_coder.format in FORMATS_WITHOUT_PATH:
        return None, f"{config.sparse_coder.format} have no decoder"
    else:
        try:
            directions = _load_file_coder(config, hookpoint)
        except UserError as exc:
            return None, f"the coder could not be read ({exc})"
    if directions is None:
        return None, "the coder has no decoder"
    if directions.ndim != 2 or directions.shape[0] != reader.num_latents:
        return None, f"decoder shape {tuple(directions.shape)} does not fit {reader.num_latents} latents"
    return directions.float().numpy(), ""


def _load_file_coder(config: RunConfig, hookpoint: str) -> torch.Tensor | None:
    from autointerp.coders import load_file_coder  # imports the coder libraries: only when needed

    return load_file_coder(config.sparse_coder, hookpoint).decoder_directions()
