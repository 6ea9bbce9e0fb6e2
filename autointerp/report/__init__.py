"""`autointerp report`: a static HTML report of a run (tables, plots, one page per latent)."""

from autointerp.report.stage import write_report

__all__ = ["write_report"]
