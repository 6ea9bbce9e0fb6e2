"""What a score run has left to do: the targets of each scorer, the usable explanations, the cache
readers, and the key that defines each scorer's records (stale records refused, naming what changed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from autointerp.cache import CacheReader
from autointerp.cache.inputs import refuse_other_cache
from autointerp.config import RunConfig
from autointerp.errors import UserError
from autointerp.examples import run_latents
from autointerp.examples.builder import explainer_view_digest
from autointerp.examples.compact import column
from autointerp.examples.recipe import held_out_view_key
from autointerp.examples.selection import rng_for
from autointerp.explain.explainer import Explainer
from autointerp.llm import with_resolved_backends
from autointerp.records import latest_stamps, read_records, remove_hookpoint, stale_record
from autointerp.rundir import EXPLANATIONS_DIR, SCORES_DIR, ShardSpec, cache_dir, config_hash, refuse_stale
from autointerp.score.base import ScoreReport, ScorerTally, Target, scorer_dir
from autointerp.score.prompts import PROMPT_VERSION
from autointerp.score.registry import SCORERS, get_scorer

CONTROL = "random_explanation"
"""The control that scores each latent with another latent's explanation."""
_EXPLANATION_FIELDS = ("explanation", "error", "skipped", "source")
"""`source` marks an imported explanation (autointerp/interop/imports.py): no explain config, no examples."""
_SHOWN = ("explain", "explain_negatives")
"""The lists of an explanation record that the explainer saw (their digest is checked at score time)."""
_SCORE_FIELDS = ("explanation", "error_kind", "failures")
RETRIED = frozenset({"transient", "internal"})
"""Failure kinds a rerun redoes by default: the server could not answer now, or this tool failed."""
RETRIED_ON_REQUEST = frozenset({"rejected", "parse"})
"""Failure kinds a rerun redoes only with `retry_unparseable` (the same model will likely fail again).
`undefined` (too few examples of a class for a metric) is never redone: the same examples give it again."""


class Plan:
    """What is left to score: targets grouped by scorer, the usable explanations, the cache readers."""

    def __init__(self, config: RunConfig, shard: ShardSpec, force: bool, retry_unparseable: bool = False):
        if force and not shard.is_whole:
            raise UserError("--force with --shard would delete other tasks' scores: run with --force alone")
        self.config = config
        self.retry_unparseable = retry_unparseable
        self.report = ScoreReport()
        hookpoints = config.sparse_coder.hookpoints
        self.readers = {hp: CacheReader(cache_dir(config.run_dir, hp)) for hp in hookpoints}
        for hp, reader in self.readers.items():
            refuse_other_cache(config, reader, hp)
        self.explanations = {hp: self._explanations(hp) for hp in hookpoints}
        scorers = [get_scorer(name) for name in config.scorers]
        self.report.warnings = [warning for scorer in scorers for warning in scorer.warnings(config)]
        if not any(self.explanations.values()) and any(s.needs_explanation for s in scorers):
            raise UserError(
                f"no explanations in {config.run_dir / EXPLANATIONS_DIR}: run `autointerp explain` first"
            )
        self.keys: dict[tuple[str, str], dict[str, Any]] = {}
        self.targets: dict[str, list[Target]] = {}
        for hp in hookpoints:
            latents = run_latents(config, self.readers[hp], hp).latents
            mine = [latent for i, latent in enumerate(latents) if shard.owns(i)]
            for scorer in scorers:
                controls = (
                    [None, CONTROL] if scorer.controllable and config.controls.random_explanation else [None]
                )
                for control in controls:
                    self._plan_scorer(hp, scorer.name, control, mine, force)

    def _explanations(self, hp: str) -> dict[int, dict[str, Any]]:
        """The hookpoint's explanation records, light, refused when made with another explain config."""
        directory = self.config.run_dir / EXPLANATIONS_DIR
        records = _light_explanations(directory, hp)
        key = Explainer.record_key(self.config, self.readers[hp])
        current = Explainer.record_hashes(self.config, self.readers[hp])
        if any(r["config_hash"] not in current and not r.get("source") for r in records.values()):
            stale = stale_record(directory, hp, current) or {}
            fix = "run `autointerp explain --force` first, or restore the config"
            refuse_stale(stale.get("config_key"), key, f"explanations of {hp}", fix)
        return records

    def _plan_scorer(self, hp: str, scorer: str, control: str | None, mine: list[int], force: bool) -> None:
        name = scorer_dir(scorer, control)
        directory = self.config.run_dir / SCORES_DIR / name
        key = score_key(self.config, self.readers[hp], scorer, control)
        self.keys[(name, hp)] = key
        current = score_hashes(self.config, self.readers[hp], scorer, control)
        done = read_records(directory, hp, _SCORE_FIELDS)
        if any(r["config_hash"] not in current for r in done.values()):
            if not force:
                stale = stale_record(directory, hp, current) or {}
                fix = "pass --force to replace them, or set another out_dir"
                refuse_stale(stale.get("config_key"), key, f"{name} scores of {hp}", fix)
            remove_hookpoint(directory, hp)
            done = {}
        tally = self.report.tallies.setdefault((name, hp), ScorerTally())
        swap = _control_explanations(self.explanations[hp], self.config.seed, hp) if control else {}
        for latent in mine:
            target = self._target(hp, scorer, control, latent, swap)
            if target is None:
                tally.not_explained += 1
            elif latent in done and done[latent]["explanation"] == target.explanation:
                if needs_retry(done[latent], self.retry_unparseable):
                    tally.retried += 1
                    self.targets.setdefault(scorer, []).append(target)
                else:
                    tally.already_done += 1
            else:
                self.targets.setdefault(scorer, []).append(target)

    def _target(
        self, hp: str, scorer: str, control: str | None, latent: int, swap: dict[int, int]
    ) -> Target | None:
        record = self.explanations[hp].get(latent)
        if not get_scorer(scorer).needs_explanation:
            return Target(scorer, control, hp, latent, None, None)
        if record is None:
            return None
        if control:
            other = swap.get(latent)
            explanation = self.explanations[hp][other]["explanation"] if other is not None else None
            return Target(scorer, control, hp, latent, explanation, other)
        return Target(scorer, control, hp, latent, record["explanation"], latent)

    def explanation_record(self, target: Target) -> dict[str, Any] | None:
        """The light explanation record of the target's latent (None: not explained)."""
        return self.explanations[target.hookpoint].get(target.latent)

    def targets_of(self, phase: str) -> list[Target]:
        """Every target of the scorers that run in `phase`, ordered so consecutive ones share examples."""
        targets = [t for name, ts in self.targets.items() if get_scorer(name).phase == phase for t in ts]
        return sorted(targets, key=lambda t: (t.hookpoint, t.latent))


def current_stamps(
    config: RunConfig, reader: CacheReader, directory: Path, hookpoint: str
) -> tuple[dict[int, float], int]:
    """Which records of a score folder's hookpoint this config would write (its key), as latent ->
    `written` stamp for `records.iter_latest`, and how many latents' latest records were made with
    another config (other explanations, another scorer setup, an older version). A folder of a scorer
    that is not registered has only other records."""
    scorer, _, control = directory.name.partition(".")
    hashes = score_hashes(config, reader, scorer, control or None) if scorer in SCORERS else set()
    return latest_stamps(directory, hookpoint, hashes)


def needs_retry(record: dict[str, Any], retry_unparseable: bool) -> bool:
    """Whether a finished record is redone: a latent that failed, or lost examples, for a transient reason
    (server down, timeouts) or an error of this tool; with `retry_unparseable` also unreadable answers and
    rejected requests."""
    kinds = set(record.get("failures") or {})
    if record.get("error_kind"):
        kinds.add(record["error_kind"])
    return bool(kinds & RETRIED) or (retry_unparseable and bool(kinds & RETRIED_ON_REQUEST))


def score_key(config: RunConfig, reader: CacheReader, scorer: str, control: str | None) -> dict[str, Any]:
    """What defines a score record: the explanations (through their key), the held-out test set, and the
    scorer's setup."""
    settings = {"prompt_version": PROMPT_VERSION} | get_scorer(scorer).settings(config)
    return {
        "explanations": config_hash(Explainer.record_key(config, reader)),
        "test_view": held_out_view_key(config),
        "scorer": scorer,
        "control": control,
        "settings": settings,
    }


def score_hashes(config: RunConfig, reader: CacheReader, scorer: str, control: str | None) -> set[str]:
    """The config hashes of the score records that `config` counts as its own: its key's, and the one
    earlier versions wrote here, with `auto` backends resolved."""
    configs = (config, with_resolved_backends(config))
    return {config_hash(score_key(c, reader, scorer, control)) for c in configs}


def _light_explanations(directory: Path, hookpoint: str) -> dict[int, dict[str, Any]]:
    """Each latent's latest explanation record without its examples: the windows shown are kept as a
    digest."""
    return read_records(directory, hookpoint, _EXPLANATION_FIELDS, _shown_digest)


def _shown_digest(record: dict[str, Any]) -> dict[str, Any]:
    examples = record.get("examples") or {}
    shown = [
        list(zip(column(examples.get(k), "sequence"), column(examples.get(k), "start"), strict=True))
        for k in _SHOWN
    ]
    return {"shown": explainer_view_digest(*shown)}


def _control_explanations(records: dict[int, dict[str, Any]], seed: int, hookpoint: str) -> dict[int, int]:
    """Each explained latent -> another explained latent whose explanation it is scored with (a seeded
    derangement: nobody keeps their own)."""
    explained = sorted(latent for latent, r in records.items() if r.get("explanation"))
    if len(explained) < 2:
        return {}
    order = rng_for(seed, hookpoint, "control-explanations").permutation(len(explained))
    shifted = np.roll(order, 1)
    return {explained[a]: explained[b] for a, b in zip(order, shifted, strict=True)}
