"""The planted coder on disk: a sparsify-format folder (`cfg.json`, `sae.safetensors`) plus `planted.json`,
the table of what each latent is (a token class with its true explanation, or noise)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from autointerp.calibrate.probes import PlantedWeights
from autointerp.rundir import atomic_dir, read_json, write_json_atomic

PLANTED_FILE = "planted.json"


def write_planted_coder(folder: Path, weights: PlantedWeights, planted: dict[str, Any]) -> None:
    """Write the coder atomically (a temporary folder renamed into place).

    sparsify computes `topk(relu(W (x - b_dec) + b), k)`; with `k` = the number of latents that is the plain
    ReLU encoder, and `b_dec` = the activations' mean. Decoder rows are the unit encoder directions.
    """
    num_latents, d_in = weights.w.shape
    cfg = {
        "activation": "topk",
        "expansion_factor": 1,
        "normalize_decoder": True,
        "num_latents": num_latents,
        "k": num_latents,
        "multi_topk": False,
        "skip_connection": False,
        "transcode": False,
        "d_in": d_in,
    }
    tensors = {
        "encoder.weight": weights.w.float().contiguous(),
        "encoder.bias": weights.bias.float().contiguous(),
        "W_dec": (weights.w / weights.w.norm(dim=1, keepdim=True)).float().contiguous(),
        "b_dec": weights.mean.float().contiguous(),
    }
    with atomic_dir(folder) as tmp:
        (tmp / "cfg.json").write_text(json.dumps(cfg, indent=2) + "\n")
        save_file(tensors, str(tmp / "sae.safetensors"))
        write_json_atomic(tmp / PLANTED_FILE, planted)


def read_planted(folder: Path) -> dict[str, Any] | None:
    """The latent table of a planted coder folder, or None when there is none."""
    path = folder / PLANTED_FILE
    return read_json(path) if path.is_file() else None
