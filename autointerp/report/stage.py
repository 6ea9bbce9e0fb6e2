"""`autointerp report`: render a run directory into a static HTML report that opens from disk."""

from __future__ import annotations

from pathlib import Path

from autointerp.cache import CacheReader
from autointerp.errors import UserError
from autointerp.examples.compact import ExampleFiller
from autointerp.report.data import MAX_PAGES, ReportData, gather
from autointerp.report.html import latent_path
from autointerp.report.index import render_index, write_rows
from autointerp.report.latent import render_latent
from autointerp.report.plots import write_plots
from autointerp.report.tokens import load_pieces
from autointerp.rundir import (
    MANIFEST_FILE,
    REPORT_DIR,
    REPORT_INDEX,
    REPORT_PLOTS_DIR,
    REPORT_ROWS_DIR,
    cache_dir,
    read_json,
    replacing_dir,
)


def write_report(run_dir: Path, max_pages: int = MAX_PAGES) -> Path:
    """Write `RUN_DIR/report/` (index.html, rows/*.js, latents/<hookpoint>/<latent>.html, plots/*.png).

    The index's latent table is paged, its rows in data files loaded as needed; at most `max_pages`
    latents get a page of their own (`choose_pages`). The report is built in a temporary folder that then
    replaces the old one. Returns index.html's path.
    """
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist: pass the out_dir of a run")
    if max_pages < 0:
        raise UserError(f"--max-pages: must be at least 0, got {max_pages}")
    data = gather(run_dir, max_pages)
    pieces, note = load_pieces(data.config.model.path)
    fillers = _fillers(run_dir, data)
    target = run_dir / REPORT_DIR
    with replacing_dir(target) as tmp:
        plots = write_plots(data, tmp / REPORT_PLOTS_DIR)
        chunks = write_rows(data, tmp / REPORT_ROWS_DIR)
        (tmp / REPORT_INDEX).write_text(render_index(data, plots, chunks, note), encoding="utf-8")
        for page in data.pages:
            path = tmp / latent_path(page.hookpoint, page.latent)
            path.parent.mkdir(parents=True, exist_ok=True)
            html = render_latent(page.full(), pieces, note, fillers.get(page.hookpoint))
            path.write_text(html, encoding="utf-8")
    return target / REPORT_INDEX


def _fillers(run_dir: Path, data: ReportData) -> dict[str, ExampleFiller]:
    """Per hookpoint with a finished cache, what puts the records' tokens and activations back."""
    fillers = {}
    for hookpoint in dict.fromkeys(row.hookpoint for row in data.pages):
        directory = cache_dir(run_dir, hookpoint)
        if (directory / MANIFEST_FILE).is_file() and read_json(directory / MANIFEST_FILE).get("complete"):
            fillers[hookpoint] = ExampleFiller(CacheReader(directory))
    return fillers
