"""What `compare` found: the runs, each pair's matching and explanation similarity, interpretability."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autointerp.compare.interpretability import Interpretability
from autointerp.compare.matching import Matching
from autointerp.compare.runs import Run
from autointerp.compare.similarity import ExplanationSimilarity


@dataclass(frozen=True)
class PairResult:
    a: Run
    b: Run
    matching: Matching
    similarity: ExplanationSimilarity


@dataclass
class CompareReport:
    out_dir: Path
    runs: list[Run]
    pairs: list[PairResult]
    interpretability: Interpretability
    notes: list[str]
    files: list[Path] = field(default_factory=list)

    def similarity_matrix(self) -> np.ndarray:
        """Mean explanation similarity of matched latents for every two runs (NaN: none explained in both)."""
        index = {run.label: i for i, run in enumerate(self.runs)}
        matrix = np.eye(len(self.runs))
        for pair in self.pairs:
            i, j = index[pair.a.label], index[pair.b.label]
            mean = pair.similarity.summary["mean"]
            matrix[i, j] = matrix[j, i] = np.nan if mean is None else mean
        return matrix
