"""How an excerpt is shown to an LLM: token texts on one line, active runs wrapped in << >>.

Shared by the explainer's prompt and the scorers' excerpts (fuzzing, intruder), so both mark tokens alike.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ShownExample:
    """An excerpt as an LLM sees it: token texts and this latent's activation at each."""

    pieces: Sequence[str]
    activations: np.ndarray


def highlight(example: ShownExample, max_activation: float, threshold: float) -> tuple[str, list[str]]:
    """The excerpt with active runs wrapped in << >>, and `<<run>> value` strings on a 0-10 scale.

    A token is active when its activation is positive and above `threshold * max_activation`. Corpus text
    that would read as markup is defused (`defuse`), so the only << >> are the highlights.
    """
    pieces, acts = _without_markers(example.pieces), _activations(example)
    runs = _runs(acts > max(threshold * max_activation, 0.0), len(pieces))
    peaks = acts.tolist()
    values = [
        f"{_markers(defuse(_OPEN + ''.join(pieces[a:b]) + _CLOSE))} {scale(max(peaks[a:b]), max_activation)}"
        for a, b in runs
    ]
    return _shown(pieces, runs), values


def highlight_text(example: ShownExample, max_activation: float, threshold: float) -> str:
    """The excerpt as `highlight` shows it, without the values."""
    cutoff = max(threshold * max_activation, 0.0)
    return mark(example.pieces, _activations(example) > cutoff)


def mark(pieces: Sequence[str], mask: np.ndarray) -> str:
    """The excerpt with the runs of tokens where the boolean `mask` is set wrapped in << >>: what
    `highlight` shows for activations that are positive exactly there, without the values."""
    return _shown(_without_markers(pieces), _runs(np.asarray(mask, dtype=bool), len(pieces)))


def _activations(example: ShownExample) -> np.ndarray:
    """As float64, so that comparing with a cutoff is exact (a float32 array would round the cutoff)."""
    return np.asarray(example.activations, dtype=np.float64)


def _runs(active: np.ndarray, length: int) -> list[tuple[int, int]]:
    """(start, stop) of each run of set entries of a boolean array of `length` entries."""
    if active.shape != (length,):
        raise ValueError(f"{active.size} activations or mask entries for {length} pieces")
    return [run.span() for run in _RUNS.finditer(active.tobytes())]


def _shown(pieces: list[str], runs: list[tuple[int, int]]) -> str:
    """The pieces on one line, each run wrapped in << >>, corpus markup defused."""
    parts, end = [], 0
    for start, stop in runs:
        parts += ["".join(pieces[end:start]), _OPEN, "".join(pieces[start:stop]), _CLOSE]
        end = stop
    parts.append("".join(pieces[end:]))
    return one_line(_markers(defuse("".join(parts))))


_OPEN, _CLOSE = "\x00", "\x01"
"""Where highlights open and close while the corpus text around them is defused."""
_RUNS = re.compile(b"\x01+")
"""Runs of set entries in a boolean array's bytes."""


def _without_markers(pieces: Sequence[str]) -> list[str]:
    """The pieces, with corpus bytes that would pass for a highlight marker dropped."""
    pieces = list(pieces)
    joined = "".join(pieces)
    if _OPEN in joined or _CLOSE in joined:
        return [p.replace(_OPEN, "").replace(_CLOSE, "") for p in pieces]
    return pieces


def _markers(text: str) -> str:
    """The highlight markers in place, a space kept between a marker and a corpus `<` or `>` beside it
    (`<<<` would not say where the highlight starts)."""
    if "<" in text or ">" in text:
        for tight, spaced in _SPACED:
            text = text.replace(tight, spaced)
    return text.replace(_OPEN, "<<").replace(_CLOSE, ">>")


_SPACED = (
    ("<" + _OPEN, "< " + _OPEN),
    (_OPEN + "<", _OPEN + " <"),
    (">" + _CLOSE, "> " + _CLOSE),
    (_CLOSE + ">", _CLOSE + " >"),
)


def plain(pieces: Sequence[str]) -> str:
    """The excerpt's text on one line, nothing highlighted (markup-like corpus text defused)."""
    return one_line(defuse("".join(pieces)))


_EXPLANATION_MARKER = re.compile(r"\[(\s*explanation\s*)\]", re.IGNORECASE)


def defuse(text: str) -> str:
    """Corpus text with what would read as this tool's markup broken up: `<<` and `>>` (Python's bit
    shifts, C++ streams) become `< <` and `> >`, and `[EXPLANATION]` becomes `(EXPLANATION)`, so an
    excerpt can neither fake a highlight nor plant the line the explainer's answer is read from."""
    while "<<" in text or ">>" in text:
        text = text.replace("<<", "< <").replace(">>", "> >")
    return _EXPLANATION_MARKER.sub(r"(\1)", text) if "[" in text else text


def scale(activation: float, max_activation: float) -> int:
    """Integer 0-10 relative to the latent's maximum."""
    if max_activation <= 0:
        return 0
    return int(min(10, max(0, round(10 * activation / max_activation))))


def one_line(text: str) -> str:
    """Newlines shown as `\\n`, so an excerpt stays on its prompt line."""
    return text.replace("\r", "").replace("\n", "\\n").strip()
