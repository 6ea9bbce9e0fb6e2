"""Records as tests read them: examples whole, as the report and exports see them (tokens, activations and
shown text refilled from the run's cache; records store the examples packed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autointerp.interop.rundata import RunData
from autointerp.rundir import CONFIG_FILE, EXPLANATIONS_DIR


def full_records(directory: Path, hookpoint: str) -> dict[int, dict[str, Any]]:
    """`read_records` of an explanations or scores/<scorer> folder, each record's examples unpacked and
    refilled."""
    run_dir = directory.parent if directory.name == EXPLANATIONS_DIR else directory.parent.parent
    assert (run_dir / CONFIG_FILE).is_file(), f"{directory} is not inside a run directory"
    run = RunData(run_dir)
    if directory.name == EXPLANATIONS_DIR:
        return dict(run.explanations(hookpoint))
    return dict(run.scores(directory.name, hookpoint))
