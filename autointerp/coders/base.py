"""The one interface every sparse coder format is loaded into."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SparseActivations:
    """Nonzero activations of a batch of tokens, in coordinate form.

    `rows[i]` is the token's row in the encoded batch, `latents[i]` the latent, `values[i]` its activation.
    Entries with value 0 are never included.
    """

    rows: Tensor
    latents: Tensor
    values: Tensor

    @staticmethod
    def from_topk(values: Tensor, indices: Tensor) -> SparseActivations:
        """From per-token top-k outputs `[tokens, k]`, dropping zeros, without densifying."""
        rows = torch.arange(values.shape[0], device=values.device).repeat_interleave(values.shape[1])
        flat_values, flat_latents = values.reshape(-1), indices.reshape(-1)
        keep = flat_values != 0
        return SparseActivations(rows[keep], flat_latents[keep].long(), flat_values[keep])

    @staticmethod
    def from_dense(acts: Tensor) -> SparseActivations:
        """From a dense `[tokens, latents]` batch (only for architectures that compute one anyway)."""
        rows, latents = acts.nonzero(as_tuple=True)
        return SparseActivations(rows, latents, acts[rows, latents])


class SparseCoder(ABC):
    """A sparse coder (or neuron basis) attached to one module of the subject model."""

    hookpoint: str
    """The hookpoint name as the user gave it (the cache folder name)."""
    module_path: str
    """Module of the base model whose activations are read."""
    reads_input: bool
    """True when the coder reads the module's input (transcoders, neurons) rather than its output."""
    num_latents: int
    d_in: int

    @abstractmethod
    def encode(self, x: Tensor) -> SparseActivations:
        """Encode activations `[tokens, d_in]` into their nonzero latents."""

    @abstractmethod
    def to(self, device: torch.device, dtype: torch.dtype) -> SparseCoder:
        """Move the coder's weights; returns self."""

    def decoder_directions(self) -> Tensor | None:
        """Decoder rows `[num_latents, d_out]`, or None for coders without a decoder (neurons)."""
        return None

    def fingerprint(self) -> dict[str, object]:
        """What identifies this coder's weights, for the cache's config hash."""
        return {}
