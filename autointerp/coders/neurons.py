"""MLP neuron baselines: the hidden activations of an MLP, read as the input of its down projection."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from autointerp.coders.base import SparseActivations, SparseCoder
from autointerp.errors import ConfigError
from autointerp.fingerprint import Digests
from autointerp.subject.hooks import find_module

DOWN_PROJ_NAMES = ("down_proj", "c_proj", "fc2", "dense_4h_to_h")


class NeuronCoder(SparseCoder):
    """MLP neurons as latents; `k=None` keeps every positive activation, else the k largest positive ones.

    Negative activations are never stored. Without k (format `neurons`) many neurons are positive on
    every token, so the cache is nearly dense on disk; `topk-neurons` is the practical baseline.
    Decoder directions are the down projection's columns, the neurons' output directions.
    """

    def __init__(self, hookpoint: str, module_path: str, directions: Tensor, k: int | None):
        self.hookpoint = hookpoint
        self.module_path = module_path
        self.reads_input = True
        self.num_latents = self.d_in = directions.shape[0]
        self.directions = directions
        self.k = k

    def encode(self, x: Tensor) -> SparseActivations:
        if self.k is None:
            return SparseActivations.from_dense(x.relu().float())
        values, indices = x.topk(self.k, dim=-1, sorted=False)
        return SparseActivations.from_topk(values.relu().float(), indices)

    def to(self, device: torch.device, dtype: torch.dtype) -> NeuronCoder:
        self.directions = self.directions.to(device, dtype)
        return self

    def decoder_directions(self) -> Tensor | None:
        return self.directions

    def fingerprint(self, digests: Digests | None = None) -> dict[str, object]:
        return {"format": "neurons" if self.k is None else "topk-neurons", "k": self.k}


def load_all(base_model: nn.Module, hookpoint: str, k: int) -> NeuronCoder:
    """Format `neurons`: every positive neuron activation (`k` is unused)."""
    del k
    return NeuronCoder(hookpoint, *_down_projection(base_model, hookpoint), k=None)


def load_topk(base_model: nn.Module, hookpoint: str, k: int) -> NeuronCoder:
    """Format `topk-neurons`: the k largest positive neuron activations per token."""
    module_path, directions = _down_projection(base_model, hookpoint)
    if k > directions.shape[0]:
        n = directions.shape[0]
        raise ConfigError("sparse_coder.k", f"is {k} but {module_path} has only {n} neurons: lower it")
    return NeuronCoder(hookpoint, module_path, directions, k=k)


def _down_projection(base_model: nn.Module, hookpoint: str) -> tuple[str, Tensor]:
    """Path of the hookpoint's down projection and its output directions `[d_hidden, d_model]`."""
    module = find_module(base_model, hookpoint)
    directions = _directions(module)
    if directions is not None:
        return hookpoint, directions
    for name in DOWN_PROJ_NAMES:
        child = getattr(module, name, None)
        directions = _directions(child) if isinstance(child, nn.Module) else None
        if directions is not None:
            return f"{hookpoint}.{name}", directions
    raise ConfigError(
        "sparse_coder.hookpoints",
        f"{hookpoint!r} is neither an MLP with a {'/'.join(DOWN_PROJ_NAMES)} child nor such a projection; "
        "point it at the MLP, e.g. layers.6.mlp",
    )


def _directions(module: nn.Module) -> Tensor | None:
    """`[in, out]` weight of a linear layer (nn.Linear or GPT-2 style Conv1D), else None."""
    if isinstance(module, nn.Linear):
        return module.weight.detach().T
    if type(module).__name__ == "Conv1D" and isinstance(module.weight, Tensor):
        return module.weight.detach()
    return None
