"""Compare inputs: run directories or configs, expanded to one `Run` per cached hookpoint."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from autointerp.cache import CacheReader
from autointerp.compare.activations import activation_matrix, tokens_digest
from autointerp.compare.decoders import decoder_directions
from autointerp.config import RunConfig, load_config
from autointerp.errors import UserError
from autointerp.records import hookpoint_files, read_records
from autointerp.rundir import (
    CACHE_DIR,
    CONFIG_FILE,
    EXPLANATIONS_DIR,
    MANIFEST_FILE,
    SCORES_DIR,
    cache_dir,
)


@dataclass(eq=False)
class Run:
    """One (run directory, hookpoint): its cache, explanations and scores, read lazily."""

    label: str
    run_dir: Path
    hookpoint: str
    config: RunConfig | None
    explanations: dict[int, str]

    @cached_property
    def reader(self) -> CacheReader:
        return CacheReader(cache_dir(self.run_dir, self.hookpoint))

    @property
    def num_latents(self) -> int:
        return self.reader.num_latents

    @property
    def space(self) -> tuple[object, object]:
        """(model, module path): coders with equal spaces decode into the same activations."""
        manifest = self.reader.manifest
        return manifest.get("model"), manifest.get("coder", {}).get("module_path", self.hookpoint)

    @cached_property
    def decoder(self) -> tuple[np.ndarray | None, str]:
        """Decoder directions [num_latents, d], or None and the reason there are none."""
        return decoder_directions(self.reader, self.config, self.hookpoint)

    @cached_property
    def tokens_digest(self) -> str:
        return tokens_digest(self.reader.dir)

    @cached_property
    def activations(self) -> sp.csr_array:
        return activation_matrix(self.reader)

    def same_coder(self, other: Run) -> bool:
        """Whether both runs read one cache (same folder, or a cache made with the same config)."""
        if self.reader.dir.resolve() == other.reader.dir.resolve():
            return True
        mine, theirs = self.reader.manifest.get("config_hash"), other.reader.manifest.get("config_hash")
        return mine is not None and mine == theirs and self.num_latents == other.num_latents

    def scorers(self) -> list[str]:
        """Scorer folders (incl. controls) holding records of this hookpoint."""
        root = self.run_dir / SCORES_DIR
        folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        return [p.name for p in folders if hookpoint_files(p, self.hookpoint)]

    def scores(self, scorer: str) -> dict[int, float]:
        """Latent -> headline score of the latents this scorer scored (failed and skipped left out)."""
        records = read_records(
            self.run_dir / SCORES_DIR / scorer, self.hookpoint, ("score", "error", "skipped")
        )
        return {
            latent: float(r["score"])
            for latent, r in records.items()
            if r.get("score") is not None and not r.get("error") and not r.get("skipped")
        }


def resolve_runs(inputs: list[Path]) -> tuple[list[Run], list[str]]:
    """One Run per cached hookpoint of each input, and notes on hookpoints without explanations."""
    runs = [run for path in inputs for run in _hookpoint_runs(*_locate(path))]
    if len(runs) < 2:
        raise UserError("compare needs at least two runs (or one run with several hookpoints): pass more")
    _deduplicate_labels(runs)
    notes = [
        f"{run.label} has no explanations: compared by latent similarity only"
        for run in runs
        if not run.explanations
    ]
    return runs, notes


def _locate(path: Path) -> tuple[Path, RunConfig | None]:
    """A run directory (with its config.yaml, if any) from a run directory or a YAML config."""
    if path.is_dir():
        config_file = path / CONFIG_FILE
        return path, load_config(config_file) if config_file.is_file() else None
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        config = load_config(path)
        if not config.run_dir.is_dir():
            raise UserError(
                f"{path}: its run directory {config.run_dir} does not exist; run its stages first"
            )
        return config.run_dir, config
    raise UserError(f"{path} is neither a run directory nor a YAML config: pass runs/<name> or a config file")


def _hookpoint_runs(run_dir: Path, config: RunConfig | None) -> list[Run]:
    root = run_dir / CACHE_DIR
    hookpoints = (
        sorted(p.name for p in root.iterdir() if (p / MANIFEST_FILE).is_file()) if root.is_dir() else []
    )
    if not hookpoints:
        raise UserError(f"{run_dir} has no cache: run `autointerp cache` on it first")
    name = config.name if config is not None else run_dir.name
    return [Run(f"{name}/{hp}", run_dir, hp, config, _explanations(run_dir, hp)) for hp in hookpoints]


def _explanations(run_dir: Path, hookpoint: str) -> dict[int, str]:
    records = read_records(run_dir / EXPLANATIONS_DIR, hookpoint, ("explanation", "error"))
    return {
        latent: r["explanation"]
        for latent, r in sorted(records.items())
        if isinstance(r.get("explanation"), str) and r["explanation"].strip() and not r.get("error")
    }


def _deduplicate_labels(runs: list[Run]) -> None:
    """Runs with equal labels get `#2`, `#3`, ... appended from their second occurrence on."""
    seen: Counter[str] = Counter()
    for run in runs:
        seen[run.label] += 1
        if seen[run.label] > 1:
            run.label = f"{run.label}#{seen[run.label]}"
