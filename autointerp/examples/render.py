"""How an excerpt is shown to an LLM: token texts on one line, active runs wrapped in << >>.

Shared by the explainer's prompt and the scorers' excerpts (fuzzing, intruder), so both mark tokens alike.
"""

from __future__ import annotations

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

    A token is active when its activation is positive and above `threshold * max_activation`.
    """
    cutoff = threshold * max_activation
    text, values, run, run_peak = [], [], [], 0.0
    for piece, act in zip(example.pieces, example.activations, strict=True):
        if act > cutoff and act > 0:
            run.append(piece)
            run_peak = max(run_peak, float(act))
            continue
        if run:
            text.append(f"<<{''.join(run)}>>")
            values.append(f"<<{''.join(run)}>> {scale(run_peak, max_activation)}")
            run, run_peak = [], 0.0
        text.append(piece)
    if run:
        text.append(f"<<{''.join(run)}>>")
        values.append(f"<<{''.join(run)}>> {scale(run_peak, max_activation)}")
    return one_line("".join(text)), values


def plain(pieces: Sequence[str]) -> str:
    """The excerpt's text on one line, nothing highlighted."""
    return one_line("".join(pieces))


def scale(activation: float, max_activation: float) -> int:
    """Integer 0-10 relative to the latent's maximum."""
    if max_activation <= 0:
        return 0
    return int(min(10, max(0, round(10 * activation / max_activation))))


def one_line(text: str) -> str:
    """Newlines shown as `\\n`, so an excerpt stays on its prompt line."""
    return text.replace("\r", "").replace("\n", "\\n").strip()
