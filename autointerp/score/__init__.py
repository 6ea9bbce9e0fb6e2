"""Stage 3: score explanations (detection, fuzzing, simulation, embedding, surprisal, intervention,
intruder)."""

from autointerp.score.base import ScoreReport
from autointerp.score.stage import run_score
from autointerp.score.summary import summary_rows, write_summary

__all__ = ["ScoreReport", "run_score", "summary_rows", "write_summary"]
