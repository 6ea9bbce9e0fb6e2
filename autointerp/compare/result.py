"""What `compare` found: the runs, each pair's matching and explanation similarity, interpretability."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autointerp.compare.interpretability import Interpretability
from autointerp.compare.latent_similarity import LatentSimilarity
from autointerp.compare.matching import Matching
from autointerp.compare.partners import Partners
from autointerp.compare.runs import Run
from autointerp.compare.similarity import ExplanationSimilarity


@dataclass(frozen=True)
class PairResult:
    a: Run
    b: Run
    matching: Matching
    latents: LatentSimilarity
    similarity: ExplanationSimilarity
    reachable: int
    """Matched pairs explained on at least one side: explained on both once the partner files are."""


@dataclass
class CompareReport:
    out_dir: Path
    runs: list[Run]
    pairs: list[PairResult]
    interpretability: Interpretability
    notes: list[str]
    partners: list[Partners] = field(default_factory=list)
    next_commands: list[str] = field(default_factory=list)
    """Commands that explain the matched partners, when pairs explained on both sides are few."""
    files: list[Path] = field(default_factory=list)

    def similarity_matrix(self) -> np.ndarray:
        """Mean explanation similarity of matched latents for every two runs (NaN: none explained in both)."""
        return self._matrix(lambda pair: pair.similarity.summary["mean"])

    def latent_similarity_matrix(self) -> np.ndarray:
        """Mean similarity of matched latents (decoder cosine or activation correlation), every two runs."""
        return self._matrix(lambda pair: pair.latents.summary["mean"])

    def _matrix(self, mean: Callable[[PairResult], float | None]) -> np.ndarray:
        index = {run.label: i for i, run in enumerate(self.runs)}
        matrix = np.eye(len(self.runs))
        for pair in self.pairs:
            i, j = index[pair.a.label], index[pair.b.label]
            value = mean(pair)
            matrix[i, j] = matrix[j, i] = np.nan if value is None else value
        return matrix
