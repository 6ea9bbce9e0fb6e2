"""Stage `compare`: SAEs, layers and neurons compared through their explanations and scores."""

from autointerp.compare.result import CompareReport, PairResult
from autointerp.compare.stage import run_compare
from autointerp.compare.tables import headline_tables

__all__ = ["CompareReport", "PairResult", "headline_tables", "run_compare"]
