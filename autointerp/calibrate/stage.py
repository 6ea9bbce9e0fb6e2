"""`autointerp calibrate`: check that the configured scorers (and explainer) work, on planted latents.

1. Fit the planted coder: probes for built-in token classes on the first part of the cached corpus, plus
   random-direction noise latents (`calibration/coder/<hookpoint>/`, sparsify format).
2. Cache, explain and score it as any run (`calibration/explainer/`), through the stages' entry points.
3. Score the probes with their true explanations and, as the random-explanation control, with shuffled true
   explanations (`calibration/truth/`, sharing the cache).
4. Compare: `calibration/calibration.json`, `.md` and `.html`.

Every step skips work already done with the same settings, so an interrupted calibration resumes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autointerp.cache import CacheReader, run_cache
from autointerp.calibrate.analysis import explainer_similarity, heldout_quality, scorer_results
from autointerp.calibrate.output import write_outputs
from autointerp.calibrate.plant import PlantSettings, ensure_planted_coder, tokens_digest
from autointerp.calibrate.runs import (
    CODER_DIR,
    EXPLAINER_RUN,
    TRUTH_RUN,
    run_config,
    share_cache,
    write_truth_records,
)
from autointerp.config import RunConfig
from autointerp.embedding import DEFAULT_EMBEDDING_MODEL, Embedder
from autointerp.errors import ConfigError
from autointerp.explain import run_explain
from autointerp.records import read_records
from autointerp.report import write_report
from autointerp.rundir import CALIBRATION_DIR, EXPLANATIONS_DIR, SCORES_DIR, cache_dir
from autointerp.score import run_score, write_summary
from autointerp.texts import TokenTexts, load_tokenizer

Step = Callable[[str], Callable[..., None] | None]
"""Given a step name (plant, cache, explain, score truth, score explainer), the progress callback for it."""


@dataclass
class CalibrationReport:
    """Where the calibration wrote its result, and the result itself."""

    directory: Path
    result: dict[str, Any]


def calibration_dir(config: RunConfig) -> Path:
    return config.run_dir / CALIBRATION_DIR


def run_calibrate(
    config: RunConfig, settings: PlantSettings, force: bool = False, step: Step | None = None
) -> CalibrationReport:
    """Plant, cache, explain and score; compare the scores under true, shuffled and explainer explanations."""
    if settings.hookpoint not in config.sparse_coder.hookpoints:
        known = ", ".join(config.sparse_coder.hookpoints)
        raise ConfigError(
            "--hookpoint", f"{settings.hookpoint!r} is not among sparse_coder.hookpoints ({known})"
        )
    progress = step or (lambda name: None)
    base = calibration_dir(config)
    hp = settings.hookpoint
    progress("plant")
    planted = ensure_planted_coder(config, settings, base / CODER_DIR / hp, force)
    all_latents = [e["latent"] for e in planted["latents"]]
    probes = [e["latent"] for e in planted["latents"] if e["kind"] == "probe"]
    explained = run_config(config, base, hp, all_latents, EXPLAINER_RUN)
    truth = run_config(config, base, hp, probes, TRUTH_RUN)
    run_cache(explained, force=force, progress=progress("cache"))
    share_cache(explained, truth)
    run_explain(explained, force=force, progress=progress("explain"))
    write_truth_records(explained, truth, hp, planted)
    summaries = {}
    for name, cfg in ((TRUTH_RUN, truth), (EXPLAINER_RUN, explained)):
        run_score(cfg, force=force, progress=progress(f"score {name}"))
        summaries[name] = write_summary(cfg, cfg.run_dir / SCORES_DIR)
        write_report(cfg.run_dir)
    result = _result(config, explained, truth, planted, summaries, hp)
    write_outputs(base, result)
    return CalibrationReport(base, result)


def _result(
    config: RunConfig, explained: RunConfig, truth: RunConfig, planted: dict, summaries: dict, hp: str
) -> dict[str, Any]:
    reader = CacheReader(cache_dir(explained.run_dir, hp))
    texts = TokenTexts(load_tokenizer(config.model.path))
    runs = {TRUTH_RUN: truth.run_dir, EXPLAINER_RUN: explained.run_dir}
    scorers = scorer_results(config.scorers, runs, hp, planted, summaries, config.seed)
    records = read_records(explained.run_dir / EXPLANATIONS_DIR, hp)
    explanations = {latent: r.get("explanation") for latent, r in records.items()}
    embedder = Embedder(config.embedding.model, batch_size=config.embedding.batch_size)
    similarity = explainer_similarity(planted, explanations, embedder, config.seed)
    similarity["model"] = config.embedding.model or DEFAULT_EMBEDDING_MODEL
    similarity["explainer"] = config.explainer.model
    result = {
        "hookpoint": hp,
        "model": config.model.path,
        "scorer_model": config.scorer.model or config.explainer.model,
        "explainer_model": config.explainer.model,
        "runs": [TRUTH_RUN, EXPLAINER_RUN],
        "planted": {k: v for k, v in planted.items() if k not in ("key", "key_hash")},
        "heldout": heldout_quality(reader, planted, texts.piece),
        "scorers": scorers,
        "explainer_similarity": similarity,
    }
    headline = [f"{scorer}: {r['verdict']}" for scorer, r in scorers.items()]
    result["headline"] = headline
    if tokens_digest(reader.tokens(0, planted["fit_sequences"])) != planted["fit_tokens_sha256"]:
        headline.append(
            "warning: the cache's first sequences differ from those the probes were fitted on, so the "
            "held-out precision and recall may include fitting text (rerun with --force)"
        )
    return result
