"""Stage 2: explainer prompts, answer parsing and the explain stage."""

from autointerp.explain.stage import ExplainReport, run_explain

__all__ = ["ExplainReport", "run_explain"]
