"""`autointerp export RUN --format F`: a run in another tool's format, written whole or not at all."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from autointerp.errors import UserError
from autointerp.interop.folders import replacing
from autointerp.interop.rundata import RunData
from autointerp.rundir import EXPORT_DIR

MARKER = ".autointerp-export.json"
"""Written into every export folder: a later export may replace a folder holding it, and no other."""


@dataclass(frozen=True)
class ExportOptions:
    model_id: str | None = None
    """Neuronpedia model id; default: the subject model's folder or repo name, lower-cased."""
    source_set: str = "autointerp"
    """Neuronpedia source set name: source ids are `<layer>-<kind>-<source_set>`, e.g. `6-res-autointerp`."""
    creator_id: str = "autointerp"
    """Neuronpedia user id written as creatorId / authorId."""


def _exporters() -> dict[str, Callable[[RunData, Path, ExportOptions], None]]:
    from autointerp.interop.export_delphi import export_delphi
    from autointerp.interop.export_hf import export_hf
    from autointerp.interop.export_neuronpedia import export_neuronpedia
    from autointerp.interop.export_saebench import export_saebench

    return {
        "neuronpedia": export_neuronpedia,
        "hf": export_hf,
        "saebench": export_saebench,
        "delphi": export_delphi,
    }


FORMATS = ("neuronpedia", "hf", "saebench", "delphi")


def run_export(
    run_dir: Path, fmt: str, out: Path | None = None, options: ExportOptions | None = None
) -> Path:
    """Export `run_dir` in format `fmt` to `out` (default `<run>/export/<fmt>/`); returns the folder."""
    if fmt not in FORMATS:
        raise UserError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist: pass the out_dir of a run")
    run = RunData(run_dir)
    target = out or run_dir / EXPORT_DIR / fmt
    _check_replaceable(target)
    with replacing(target) as tmp:
        _exporters()[fmt](run, tmp, options or ExportOptions())
        (tmp / MARKER).write_text(json.dumps({"format": fmt, "run": str(run_dir.resolve())}) + "\n")
    return target


def _check_replaceable(target: Path) -> None:
    """An export replaces an empty folder or an earlier export, never anything else."""
    replaceable = target.is_dir() and (not any(target.iterdir()) or (target / MARKER).is_file())
    if target.exists() and not replaceable:
        raise UserError(f"--out: {target} exists and is not an earlier export: choose another folder")
