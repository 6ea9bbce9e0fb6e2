"""The one interface every sparse coder format is loaded into."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from autointerp.fingerprint import Digests


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


@dataclass
class HookInfo:
    """Where a coder was trained, as its files say (names are None when they do not say)."""

    hook_name: str | None = None
    """TransformerLens hook name, e.g. `blocks.6.hook_resid_pre`."""
    hf_hook_name: str | None = None
    """HF module path, optionally ending in `.input` / `.output`, e.g. `model.layers.6.output`."""
    context_size: int | None = None
    prepend_bos: bool | None = None
    notes: list[str] = field(default_factory=list)
    """Caveats found while loading, shown as warnings by the cache stage."""


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
    hook: HookInfo | None = None
    """Where the coder's files say it was trained, when they say."""

    @abstractmethod
    def encode(self, x: Tensor) -> SparseActivations:
        """Encode activations `[tokens, d_in]` into their nonzero latents."""

    @abstractmethod
    def to(self, device: torch.device, dtype: torch.dtype) -> SparseCoder:
        """Move the coder's weights; returns self."""

    def decoder_directions(self) -> Tensor | None:
        """Decoder rows `[num_latents, d_out]`, or None for coders without a decoder (neurons)."""
        return None

    def fingerprint(self, digests: Digests | None = None) -> dict[str, object]:
        """What identifies this coder's weights, for the cache's config hash (`digests` memoises file
        hashes)."""
        return {}


@dataclass(frozen=True)
class CoderFiles:
    """The files a coder was read from, and the values beside them that define it (e.g. folded statistics)."""

    fmt: str
    folder: Path
    names: tuple[str, ...]
    extra: dict[str, object] = field(default_factory=dict)

    def fingerprint(self, digests: Digests | None = None) -> dict[str, object]:
        """The format, the sha256 of each file's whole content, and the extra values."""
        files = (digests or Digests()).named(self.folder / name for name in self.names)
        return {"format": self.fmt, "files": files, **self.extra}


class FileCoder(SparseCoder):
    """A coder whose weights were read from files: `weights` by name, plus the files they came from."""

    weights: dict[str, Tensor]
    decoder_key: str = "W_dec"

    def __init__(self, weights: dict[str, Tensor], files: CoderFiles):
        self.weights = weights
        self.files = files

    def to(self, device: torch.device, dtype: torch.dtype) -> FileCoder:
        self.weights = {name: t.to(device, dtype) for name, t in self.weights.items()}
        return self

    def decoder_directions(self) -> Tensor | None:
        return self.weights.get(self.decoder_key)

    def fingerprint(self, digests: Digests | None = None) -> dict[str, object]:
        return self.files.fingerprint(digests)
