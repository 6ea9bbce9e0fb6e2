"""Matched partners to explain: for each run directory, the latents that would make matched pairs
explained on both sides, written as a latent file for `latents.indices_file`.

Two coders explained on independent samples of n latents out of N share about n^2 / N explained pairs
(0.3 for 100 of 32k). Explaining, in each run, the partners of the other runs' explained latents turns every
pair with one explained side into a pair explained on both.
"""

from __future__ import annotations

import re
import shlex
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autointerp.compare.matching import Matching
from autointerp.compare.runs import Run
from autointerp.latentfile import format_latent_file
from autointerp.rundir import CONFIG_FILE, compare_partners_file


@dataclass
class Partners:
    """One run directory's latents to have explained, per hookpoint, and how many are not explained yet."""

    run_dir: Path
    name: str
    latents: dict[str, set[int]] = field(default_factory=dict)
    explained: dict[str, set[int]] = field(default_factory=dict)

    @property
    def missing(self) -> int:
        """Latents listed here without an explanation yet."""
        return sum(len(self.latents[hp] - self.explained[hp]) for hp in self.latents)

    def text(self) -> str:
        header = [
            f"Latents of {self.run_dir} to explain for `autointerp compare`:",
            "its explained latents and the matched partners of the other runs' explained latents.",
            "autointerp explain CONFIG --set latents.indices_file=THIS_FILE (then score the same way)",
        ]
        return format_latent_file(self.latents, header)

    def commands(self, path: Path) -> list[str]:
        """The explain and score commands that explain this file's latents."""
        config = self.run_dir / CONFIG_FILE
        option = shlex.quote(f"latents.indices_file={path}")
        return [
            f"autointerp {stage} {shlex.quote(str(config))} --set {option}" for stage in ("explain", "score")
        ]


def partner_latents(runs: list[Run], pairs: list[tuple[Run, Run, Matching]]) -> list[Partners]:
    """Per run directory (in the order of `runs`): explained latents plus the partners of the others'."""
    by_dir: dict[Path, Partners] = {}
    for run in runs:
        partners = by_dir.setdefault(run.run_dir.resolve(), Partners(run.run_dir, _name(run)))
        partners.latents.setdefault(run.hookpoint, set()).update(run.explanations)
        partners.explained.setdefault(run.hookpoint, set()).update(run.explanations)
    for a, b, matching in pairs:
        by_dir[b.run_dir.resolve()].latents[b.hookpoint].update(
            _partners(matching.a, matching.b, a.explanations)
        )
        by_dir[a.run_dir.resolve()].latents[a.hookpoint].update(
            _partners(matching.b, matching.a, b.explanations)
        )
    _unique_names(list(by_dir.values()))
    return list(by_dir.values())


def reachable_pairs(a: Run, b: Run, matching: Matching) -> int:
    """Matched pairs explained on at least one side: explained on both once the partners are explained."""
    explained_a = np.isin(matching.a, list(a.explanations))
    explained_b = np.isin(matching.b, list(b.explanations))
    return int(np.count_nonzero(explained_a | explained_b))


def partners_path(out_dir: Path, partners: Partners) -> Path:
    return out_dir / compare_partners_file(partners.name)


def _partners(source: np.ndarray, target: np.ndarray, explained: dict[int, str]) -> list[int]:
    """Latents of `target` matched to an explained latent of `source`."""
    return [int(t) for s, t in zip(source, target, strict=True) if int(s) in explained]


def _name(run: Run) -> str:
    name = run.config.name if run.config is not None else run.run_dir.name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "run"


def _unique_names(partners: list[Partners]) -> None:
    seen: dict[str, int] = defaultdict(int)
    for item in partners:
        seen[item.name] += 1
        if seen[item.name] > 1:
            item.name = f"{item.name}-{seen[item.name]}"
