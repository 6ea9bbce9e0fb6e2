"""Matplotlib PNGs of a comparison, drawn without pyplot (no global state, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from autointerp.rundir import atomic_path


def similarity_heatmap(
    labels: list[str],
    matrix: np.ndarray,
    path: Path,
    title: str = "Explanation similarity",
    label: str = "mean explanation cosine of matched latents",
) -> None:
    """Heatmap of a run x run similarity matrix, values written in the cells."""
    size = 2.0 + 0.7 * len(labels)
    fig = Figure(figsize=(size + 1.5, size))
    ax = fig.add_subplot()
    image = ax.imshow(matrix, vmin=min(0.0, float(np.nanmin(matrix))), vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for (i, j), value in np.ndenumerate(matrix):
        if np.isfinite(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.6 else "black")
    fig.colorbar(image, ax=ax, label=label)
    ax.set_title(title)
    _save(fig, path)


def similarity_distributions(series: list[tuple[str, np.ndarray, np.ndarray]], path: Path) -> None:
    """Box plots of matched-pair and random-pair explanation cosines, one pair of boxes per run pair."""
    fig = Figure(figsize=(2.0 + 1.6 * len(series), 4.5))
    ax = fig.add_subplot()
    for i, (_, matched, baseline) in enumerate(series):
        _box(ax, matched, 3 * i, "tab:blue")
        _box(ax, baseline, 3 * i + 1, "tab:gray")
    ax.set_xticks(
        [3 * i + 0.5 for i in range(len(series))], [name for name, _, _ in series], rotation=30, ha="right"
    )
    ax.set_ylabel("explanation cosine similarity")
    ax.set_title("Matched latents (blue) vs random pairs (grey)")
    _save(fig, path)


def score_distributions(scorer: str, by_run: dict[str, list[float]], path: Path) -> None:
    """Box plots of one scorer's per-latent scores, one box per run."""
    fig = Figure(figsize=(2.0 + 1.2 * len(by_run), 4.5))
    ax = fig.add_subplot()
    for i, values in enumerate(by_run.values()):
        _box(ax, np.asarray(values), i, "tab:blue")
    ax.set_xticks(range(len(by_run)), list(by_run), rotation=30, ha="right")
    ax.set_ylabel(f"{scorer} score")
    ax.set_title(f"{scorer}: score per latent")
    _save(fig, path)


def _box(ax, values: np.ndarray, position: float, color: str) -> None:
    if len(values):
        ax.boxplot(
            [values], positions=[position], widths=0.8, patch_artist=True, boxprops={"facecolor": color}
        )


def _save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
