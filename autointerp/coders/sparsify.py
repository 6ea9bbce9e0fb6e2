"""EleutherAI sparsify folders (`cfg.json` + `sae.safetensors`): TopK / GroupMax SAEs and transcoders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor

from autointerp.coders.base import CoderFiles, FileCoder, SparseActivations
from autointerp.errors import ConfigError

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae.safetensors"
ACTIVATIONS = ("topk", "groupmax")
WEIGHT_NAMES = ("encoder.weight", "encoder.bias", "W_dec", "b_dec")


class SparsifyCoder(FileCoder):
    """`pre = relu(W (x - b_dec) + b)` (no `- b_dec` for transcoders), then TopK or GroupMax of k groups.

    Matches `sparsify.SparseCoder.encode`. Transcoders read their module's input.
    """

    def __init__(self, hookpoint: str, cfg: dict[str, Any], weights: dict[str, Tensor], files: CoderFiles):
        self.hookpoint = self.module_path = hookpoint
        self.reads_input = bool(cfg.get("transcode", False))
        self.num_latents, self.d_in = weights["encoder.weight"].shape
        self.k = int(cfg["k"])
        self.activation = str(cfg.get("activation", "topk"))
        super().__init__(weights, files)

    def encode(self, x: Tensor) -> SparseActivations:
        w = self.weights
        x = x.to(w["encoder.weight"].dtype)
        if not self.reads_input:
            x = x - w["b_dec"]
        pre = F.relu(F.linear(x, w["encoder.weight"], w["encoder.bias"]))
        if self.activation == "topk":
            values, indices = pre.topk(self.k, dim=-1, sorted=False)
        else:
            values, indices = pre.unflatten(-1, (self.k, -1)).max(dim=-1)
            group_size = self.num_latents // self.k
            indices = indices + torch.arange(0, self.num_latents, group_size, device=pre.device)
        return SparseActivations.from_topk(values.float(), indices)


def detect(folder: Path) -> bool:
    return (folder / CFG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


def load(folder: Path, hookpoint: str) -> SparsifyCoder:
    """Load a sparsify coder; `skip_connection` only affects decoding and is ignored."""
    cfg = json.loads((folder / CFG_FILE).read_text())
    if cfg.get("activation", "topk") not in ACTIVATIONS:
        raise ConfigError(
            "sparse_coder.path",
            f"{folder}: unknown sparsify activation {cfg['activation']!r}; expected topk or groupmax",
        )
    weights = load_file(folder / WEIGHTS_FILE)
    kept = {name: weights[name] for name in WEIGHT_NAMES if name in weights}
    return SparsifyCoder(hookpoint, cfg, kept, CoderFiles("sparsify", folder, (CFG_FILE, WEIGHTS_FILE)))
