"""Report plots as PNG files: score histograms, score vs firing frequency, scorer vs scorer.

Figures are made with `matplotlib.figure.Figure` (Agg canvas), never pyplot, so no global state or display.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from autointerp.report.data import ReportData

DPI = 100


@dataclass(frozen=True)
class Plot:
    title: str
    file: str
    """File name inside the plots folder."""


def write_plots(data: ReportData, directory: Path) -> list[Plot]:
    """Write every plot the scores allow into `directory`; returns them in display order."""
    directory.mkdir(parents=True, exist_ok=True)
    plots = []
    for scorer in data.scorers:
        plots += _histogram(data, scorer, directory)
        plots += _versus_frequency(data, scorer, directory)
    for a, b in combinations(data.scorers, 2):
        plots += _scorer_pair(data, a, b, directory)
    return plots


def _points(data: ReportData, x: np.ndarray, y: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Hookpoint -> (x, y) of its latents where both are known and finite."""
    table = data.table
    hookpoints = np.array(table.hookpoints, dtype=object)
    known = np.isfinite(x) & np.isfinite(y)
    return {
        hp: (x[known & (hookpoints == hp)], y[known & (hookpoints == hp)])
        for hp in dict.fromkeys(table.hookpoints)
        if (known & (hookpoints == hp)).any()
    }


def _histogram(data: ReportData, scorer: str, directory: Path) -> list[Plot]:
    scores = data.table.scores[scorer]
    groups = {hp: y for hp, (_, y) in _points(data, np.ones_like(scores), scores).items()}
    if not groups:
        return []
    fig, ax = _figure()
    ax.hist(list(groups.values()), bins=20, label=list(groups), alpha=0.8)
    _label(ax, f"{scorer}: score per latent", _metric(data, scorer), "latents")
    return [_save(fig, directory, f"hist-{scorer}.png", f"{scorer} scores")]


def _versus_frequency(data: ReportData, scorer: str, directory: Path) -> list[Plot]:
    frequency = np.where(data.table.firing_frequency > 0, data.table.firing_frequency, np.nan)  # log axis
    points = _points(data, frequency, data.table.scores[scorer])
    if not points:
        return []
    fig, ax = _scatter(points)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap over a short log range
    _label(ax, f"{scorer} vs firing frequency", "firing frequency", _metric(data, scorer))
    return [_save(fig, directory, f"freq-{scorer}.png", f"{scorer} vs firing frequency")]


def _scorer_pair(data: ReportData, a: str, b: str, directory: Path) -> list[Plot]:
    points = _points(data, data.table.scores[a], data.table.scores[b])
    if sum(len(x) for x, _ in points.values()) < 2:
        return []
    fig, ax = _scatter(points)
    _label(ax, f"{a} vs {b}", f"{a} {_metric(data, a)}", f"{b} {_metric(data, b)}")
    return [_save(fig, directory, f"pair-{a}-vs-{b}.png", f"{a} vs {b}")]


def _scatter(points: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[Figure, Axes]:
    fig, ax = _figure()
    for hp, (x, y) in points.items():
        ax.scatter(*_thinned(x, y), s=12 if len(x) < 5000 else 2, label=hp, alpha=0.7)
    return fig, ax


SCATTER_POINTS = 50_000
"""Most points a scatter plot draws (a seeded sample beyond it): a million dots are one blot, slowly."""


def _thinned(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(x) <= SCATTER_POINTS:
        return x, y
    keep = np.sort(np.random.default_rng(0).choice(len(x), SCATTER_POINTS, replace=False))
    return x[keep], y[keep]


def _figure() -> tuple[Figure, Axes]:
    fig = Figure(figsize=(5, 3.6), dpi=DPI, layout="constrained")
    return fig, fig.add_subplot()


def _metric(data: ReportData, scorer: str) -> str:
    return data.headlines.get(scorer) or "score"


def _label(ax: Axes, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="small")


def _save(fig: Figure, directory: Path, name: str, title: str) -> Plot:
    fig.savefig(directory / name)
    return Plot(title, name)
