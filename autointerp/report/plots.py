"""Report plots as PNG files: score histograms, score vs firing frequency, scorer vs scorer.

Figures are made with `matplotlib.figure.Figure` (Agg canvas), never pyplot, so no global state or display.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from autointerp.report.data import LatentRow, ReportData

DPI = 100
Point = tuple[float, float]
Value = Callable[[LatentRow], float | None]
"""Reads one number (or None) off a latent row."""


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


def _points(data: ReportData, x: Value, y: Value) -> dict[str, list[Point]]:
    """Hookpoint -> (x, y) of its latents where both are known and finite."""
    points: dict[str, list[Point]] = {}
    for row in data.latents:
        x_value, y_value = x(row), y(row)
        if x_value is not None and y_value is not None and math.isfinite(x_value) and math.isfinite(y_value):
            points.setdefault(row.hookpoint, []).append((x_value, y_value))
    return points


def _score(scorer: str) -> Value:
    return lambda row: row.scores.get(scorer)


def _histogram(data: ReportData, scorer: str, directory: Path) -> list[Plot]:
    groups = {hp: [y for _, y in p] for hp, p in _points(data, lambda row: 1.0, _score(scorer)).items()}
    if not groups:
        return []
    fig, ax = _figure()
    ax.hist(list(groups.values()), bins=20, label=list(groups), alpha=0.8)
    _label(ax, f"{scorer}: score per latent", _metric(data, scorer), "latents")
    return [_save(fig, directory, f"hist-{scorer}.png", f"{scorer} scores")]


def _versus_frequency(data: ReportData, scorer: str, directory: Path) -> list[Plot]:
    points = _points(data, lambda row: row.firing_frequency or None, _score(scorer))  # log axis: no zeros
    if not points:
        return []
    fig, ax = _scatter(points)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap over a short log range
    _label(ax, f"{scorer} vs firing frequency", "firing frequency", _metric(data, scorer))
    return [_save(fig, directory, f"freq-{scorer}.png", f"{scorer} vs firing frequency")]


def _scorer_pair(data: ReportData, a: str, b: str, directory: Path) -> list[Plot]:
    points = _points(data, _score(a), _score(b))
    if sum(len(p) for p in points.values()) < 2:
        return []
    fig, ax = _scatter(points)
    _label(ax, f"{a} vs {b}", f"{a} {_metric(data, a)}", f"{b} {_metric(data, b)}")
    return [_save(fig, directory, f"pair-{a}-vs-{b}.png", f"{a} vs {b}")]


def _scatter(points: dict[str, list[Point]]) -> tuple[Figure, Axes]:
    fig, ax = _figure()
    for hp, pairs in points.items():
        ax.scatter([x for x, _ in pairs], [y for _, y in pairs], s=12, label=hp, alpha=0.7)
    return fig, ax


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
