"""Fixed-width token windows over the cached sequences, and the activating windows of a latent.

Each sequence of `ctx_len` tokens is cut into grid cells of `width` tokens: cell c covers
[c * width, (c + 1) * width), except that the last cell is [ctx_len - width, ctx_len) when ctx_len is
not a multiple of width. Windows never cross a sequence boundary, so two windows overlap exactly when
their global starts (sequence * ctx_len + start) are less than `width` apart.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from autointerp.cache import LatentActivations


@dataclass(eq=False, slots=True)
class Example:
    """One window of one latent: its tokens and the latent's activation at each (0 where it is silent).

    Treated as immutable (not frozen: a frozen dataclass costs four times as much to make, and a latent
    makes 250 of them)."""

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


Placement = Literal["center", "grid", "random"]
"""Where an activating window is put around its grid cell's peak: centred on it, the grid cell itself, or
with the peak at a uniformly random position (each clipped to stay inside the sequence)."""


@dataclass(frozen=True)
class Cells:
    """The grid cells of one latent that hold an activation: the position and value of each cell's peak."""

    sequence: np.ndarray
    cell: np.ndarray
    """Cell number within the sequence."""
    peak: np.ndarray
    """Position (within the sequence) of the cell's first highest activation."""
    value: np.ndarray
    """The cell's highest activation."""

    def __len__(self) -> int:
        return len(self.sequence)

    def top(self, n: int | None) -> Cells:
        """The `n` cells with the highest peaks (ties: the earlier cell), in their original order."""
        if n is None or len(self) <= n:
            return self
        keep = np.sort(np.argsort(-self.value, kind="stable")[:n])
        return Cells(self.sequence[keep], self.cell[keep], self.peak[keep], self.value[keep])


@dataclass(frozen=True)
class Candidates:
    """Activating windows of one latent, sorted by global start, with each window's highest activation."""

    sequence: np.ndarray
    start: np.ndarray
    max_activation: np.ndarray
    ctx_len: int = 0

    def __len__(self) -> int:
        return len(self.sequence)

    @property
    def first(self) -> np.ndarray:
        """Global index (sequence * ctx_len + start) of each window's first token."""
        return self.sequence * self.ctx_len + self.start


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

    def cells(self, acts: LatentActivations) -> Cells:
        """The grid cells holding an activation, with the position and value of each cell's peak."""
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
        order = np.argsort(keys, kind="stable")
        sequence, cell = np.divmod(keys[order], cells)
        return Cells(sequence, cell, peak[order], value[order])

    def place(
        self,
        acts: LatentActivations,
        cells: Cells,
        placement: Placement,
        rng: np.random.Generator | None = None,
    ) -> Candidates:
        """One window per cell, placed by `placement` (`random` needs `rng`); cells that end up as the same
        window are kept once. Each window's value is its own highest activation."""
        ctx, width = self.ctx_len, self.width
        if placement == "center":
            start = np.clip(cells.peak - width // 2, 0, ctx - width)
        elif placement == "grid":
            start = np.minimum(cells.cell * width, ctx - width)
        else:
            if rng is None:
                raise ValueError("random placement needs a generator")
            start = np.clip(cells.peak - rng.integers(0, width, size=len(cells)), 0, ctx - width)
        _, keep = np.unique(cells.sequence * ctx + start, return_index=True)
        sequence, start = cells.sequence[keep], start[keep]
        return Candidates(sequence, start, self.window_max(acts, sequence * ctx + start), ctx)

    def candidates(self, acts: LatentActivations, center: bool) -> Candidates:
        """The activating windows of every cell, centred on the cell's peak or the grid cells themselves."""
        return self.place(acts, self.cells(acts), "center" if center else "grid")

    def window_max(self, acts: LatentActivations, first: np.ndarray) -> np.ndarray:
        """The latent's highest activation in each window starting at global token `first` (0 if silent)."""
        first = np.asarray(first, dtype=np.int64)
        out = np.zeros(len(first), dtype=np.float32)
        if not len(acts.token_index) or not len(first):
            return out
        lo, hi = self._bounds(acts, first)
        values = np.append(acts.activation.astype(np.float32), np.float32(0))  # hi may be one past the end
        bounds = np.stack([lo, hi], axis=1).reshape(-1)
        reduced = np.maximum.reduceat(values, bounds)[::2]  # max over values[lo:hi] where lo < hi
        silent_somewhere = hi - lo < self.width  # then 0 is among the window's activations too
        return np.where(hi > lo, np.where(silent_somewhere, np.maximum(reduced, 0), reduced), out)

    def overlaps(self, first: np.ndarray, taken: np.ndarray) -> np.ndarray:
        """Mask of the windows starting at global tokens `first` sharing a token with a window of `taken`."""
        taken = np.sort(np.asarray(taken, dtype=np.int64))
        first = np.asarray(first, dtype=np.int64)
        if not len(taken):
            return np.zeros(len(first), dtype=bool)
        after = np.searchsorted(taken, first).clip(max=len(taken) - 1)
        before = (after - 1).clip(min=0)
        return (np.abs(taken[after] - first) < self.width) | (np.abs(first - taken[before]) < self.width)

    def is_silent(self, acts: LatentActivations, sequence: np.ndarray, start: np.ndarray) -> np.ndarray:
        """Whether the latent is zero on every token of each window."""
        lo, hi = self._bounds(acts, np.asarray(sequence) * self.ctx_len + np.asarray(start))
        return lo == hi

    def examples(
        self,
        acts: LatentActivations,
        sequences: Sequence[int] | np.ndarray,
        starts: Sequence[int] | np.ndarray,
        quantiles: Sequence[int | None] | None = None,
    ) -> list[Example]:
        """The windows at (sequence, start), with this latent's activations, cut out together."""
        sequence = np.asarray(sequences, dtype=np.int64).reshape(-1)
        start = np.asarray(starts, dtype=np.int64).reshape(-1)
        if not len(sequence):
            return []
        first = sequence * self.ctx_len + start
        lo, hi = self._bounds(acts, first)
        offsets = np.arange(self.width)
        tokens = self.tokens[sequence[:, None], start[:, None] + offsets].astype(np.int32)
        activations = np.zeros((len(first), self.width), dtype=np.float32)
        counts = hi - lo
        rows = np.repeat(np.arange(len(first)), counts)
        # lo[r], lo[r] + 1, ..., hi[r] - 1 for each window r, end to end
        taken = np.arange(len(rows)) + np.repeat(lo - (np.cumsum(counts) - counts), counts)
        activations[rows, acts.token_index[taken] - first[rows]] = acts.activation[taken]
        quantiles = quantiles if quantiles is not None else [None] * len(first)
        return [
            Example(s, a, t, v, q)
            for s, a, t, v, q in zip(
                sequence.tolist(), start.tolist(), tokens, activations, quantiles, strict=True
            )
        ]

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


class TokenDisjoint:
    """Accepts windows, given by their global first token, that share no token with those accepted."""

    def __init__(self, width: int, taken: Iterable[int] = ()):
        self.width = width
        self.firsts: list[int] = sorted(int(t) for t in taken)

    def add(self, first: int) -> bool:
        """Accept (and remember) the window at `first` unless it overlaps one already accepted."""
        first = int(first)
        i = bisect.bisect_left(self.firsts, first)
        if i < len(self.firsts) and self.firsts[i] - first < self.width:
            return False
        if i and first - self.firsts[i - 1] < self.width:
            return False
        self.firsts.insert(i, first)
        return True


def activating_windows(token_index: np.ndarray, ctx_len: int, width: int) -> int:
    """Grid cells of `width` tokens holding at least one of the global token indices (as `Windows.cells`
    counts them: with ctx_len not a multiple of width, the last cell is [ctx_len - width, ctx_len))."""
    cells = -(-ctx_len // width)
    sequence, position = np.divmod(np.asarray(token_index, dtype=np.int64), ctx_len)
    head = position < (cells - 1) * width
    tail = position >= ctx_len - width
    keys = np.concatenate(
        [sequence[head] * cells + position[head] // width, sequence[tail] * cells + cells - 1]
    )
    return len(np.unique(keys))
