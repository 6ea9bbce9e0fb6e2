"""`autointerp report`: render a run directory into a static HTML report that opens from disk."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from autointerp.errors import UserError
from autointerp.report.data import gather
from autointerp.report.html import latent_path
from autointerp.report.index import render_index
from autointerp.report.latent import render_latent
from autointerp.report.plots import write_plots
from autointerp.report.tokens import load_pieces
from autointerp.rundir import REPORT_DIR, REPORT_INDEX, REPORT_PLOTS_DIR


def write_report(run_dir: Path) -> Path:
    """Write `RUN_DIR/report/` (index.html, latents/<hookpoint>/<latent>.html, plots/*.png).

    The report is built in a temporary folder that then replaces the old one. Returns index.html's path.
    """
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist: pass the out_dir of a run")
    data = gather(run_dir)
    pieces, note = load_pieces(data.config.model.path)
    target = run_dir / REPORT_DIR
    with _replacing_dir(target) as tmp:
        plots = write_plots(data, tmp / REPORT_PLOTS_DIR)
        (tmp / REPORT_INDEX).write_text(render_index(data, plots, note), encoding="utf-8")
        for row in data.latents:
            path = tmp / latent_path(row.hookpoint, row.latent)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(render_latent(row, pieces, note), encoding="utf-8")
    return target / REPORT_INDEX


@contextmanager
def _replacing_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; when the block succeeds it replaces `target`."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a report is for reading
    try:
        yield tmp
        old = tmp.with_name(f"{tmp.name}.old")
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
