"""Fixed-width token windows over the cached sequences, and the activating windows of a latent.

Each sequence of `ctx_len` tokens is cut into grid cells of `width` tokens: cell c covers
[c * width, (c + 1) * width), except that the last cell is [ctx_len - width, ctx_len) when ctx_len is
not a multiple of width. Windows never cross a sequence boundary, so two windows overlap exactly when
their global starts (sequence * ctx_len + start) are less than `width` apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from autointerp.cache import LatentActivations


@dataclass(frozen=True, eq=False)
class Example:
    """One window of one latent: its tokens and the latent's activation at each (0 where it is silent)."""

    sequence: int
    start: int
    """First position of the window within the sequence."""
    tokens: np.ndarray
    """int32 [width]."""
    activations: np.ndarray
    """float32 [width]."""
    quantile: int | None = None
    """Activation bin the example was drawn from (0 = lowest), for examples drawn from bins."""

    @property
    def max_activation(self) -> float:
        return float(self.activations.max())

    @property
    def peak(self) -> int:
        """Index of the highest activation within the window."""
        return int(np.argmax(self.activations))

    def to_dict(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "start": self.start,
            "tokens": self.tokens.tolist(),
            "activations": self.activations.tolist(),
            "quantile": self.quantile,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Example:
        return cls(
            sequence=int(data["sequence"]),
            start=int(data["start"]),
            tokens=np.asarray(data["tokens"], dtype=np.int32),
            activations=np.asarray(data["activations"], dtype=np.float32),
            quantile=data.get("quantile"),
        )


@dataclass(frozen=True)
class Candidates:
    """Activating windows of one latent, sorted by global start, with the activation each was placed on."""

    sequence: np.ndarray
    start: np.ndarray
    max_activation: np.ndarray

    def __len__(self) -> int:
        return len(self.sequence)


class Windows:
    """Cuts windows out of the token array [num_sequences, ctx_len] of a cache."""

    def __init__(self, tokens: np.ndarray, width: int):
        self.tokens = tokens
        self.num_sequences, self.ctx_len = tokens.shape
        self.width = min(width, self.ctx_len)
        self.cells_per_sequence = -(-self.ctx_len // self.width)

    @property
    def disjoint_cells(self) -> int:
        """Grid cells that share no token: the cells of whole `width` steps from position 0."""
        return self.num_sequences * (self.ctx_len // self.width)

    def disjoint_cell(self, cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(sequence, start) of disjoint cells numbered 0 .. disjoint_cells - 1."""
        per_sequence = self.ctx_len // self.width
        return cell // per_sequence, cell % per_sequence * self.width

    def candidates(self, acts: LatentActivations, center: bool) -> Candidates:
        """The grid cells holding an activation; with `center`, re-placed with their peak at width // 2.

        The peak is the first highest activation of the cell; a centred window is shifted to stay inside
        its sequence. Cells that end up as the same window are kept once.
        """
        ctx, width, cells = self.ctx_len, self.width, self.cells_per_sequence
        sequence, position = np.divmod(acts.token_index, ctx)
        head = position < (cells - 1) * width  # in a cell before the last
        tail = position >= ctx - width  # in the last cell
        peaks = [
            _group_peaks(
                sequence[head] * cells + position[head] // width, position[head], acts.activation[head]
            ),
            _group_peaks(sequence[tail] * cells + cells - 1, position[tail], acts.activation[tail]),
        ]
        keys, peak, value = (np.concatenate(parts) for parts in zip(*peaks, strict=True))
        sequence, cell = np.divmod(keys, cells)
        if center:
            start = np.clip(peak - width // 2, 0, ctx - width)
        else:
            start = np.minimum(cell * width, ctx - width)
        _, keep = np.unique(sequence * ctx + start, return_index=True)
        return Candidates(sequence[keep], start[keep], value[keep])

    def overlapping(self, candidates: Candidates, chosen: np.ndarray) -> np.ndarray:
        """Mask of the candidates sharing a token with any of the candidates at indices `chosen`."""
        first = candidates.sequence * self.ctx_len + candidates.start
        taken = np.sort(first[chosen])
        if not len(taken):
            return np.zeros(len(first), dtype=bool)
        after = np.searchsorted(taken, first).clip(max=len(taken) - 1)
        before = (after - 1).clip(min=0)
        return (np.abs(taken[after] - first) < self.width) | (np.abs(first - taken[before]) < self.width)

    def is_silent(self, acts: LatentActivations, sequence: np.ndarray, start: np.ndarray) -> np.ndarray:
        """Whether the latent is zero on every token of each window."""
        lo, hi = self._bounds(acts, np.asarray(sequence) * self.ctx_len + np.asarray(start))
        return lo == hi

    def example(
        self, acts: LatentActivations, sequence: int, start: int, quantile: int | None = None
    ) -> Example:
        sequence, start = int(sequence), int(start)
        first = sequence * self.ctx_len + start
        lo, hi = self._bounds(acts, first)
        activations = np.zeros(self.width, dtype=np.float32)
        activations[acts.token_index[lo:hi] - first] = acts.activation[lo:hi]
        tokens = self.tokens[sequence, start : start + self.width].astype(np.int32)
        return Example(sequence, start, tokens, activations, quantile)

    def _bounds(self, acts: LatentActivations, first: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
        """Slice bounds, into the latent's sorted token indices, of the windows starting at `first`."""
        lo = np.searchsorted(acts.token_index, first, side="left")
        hi = np.searchsorted(acts.token_index, np.asarray(first) + self.width, side="left")
        return lo, hi


def _group_peaks(
    keys: np.ndarray, positions: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per run of equal sorted `keys`: the key, the position of its first highest value, and that value."""
    if not len(keys):
        return keys, positions, values
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    top = np.maximum.reduceat(values, starts)
    group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(keys)]))
    hits = np.flatnonzero(values == top[group])
    first = hits[np.searchsorted(group[hits], np.arange(len(starts)))]
    return keys[starts], positions[first], top
