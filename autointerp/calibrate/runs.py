"""The two runs a calibration drives through the pipeline, both over the planted coder and one cache:

- `explainer/`: every planted latent, explained by the configured explainer, then scored;
- `truth/`: the probe latents with their true explanations, scored with the random-explanation control on
  (each latent also scored with another probe's true explanation: a seeded derangement).

The truth run's explanation records are the explainer run's own records (so they name the windows the
explainer was shown, as the score stage checks) with the true explanation put in.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from autointerp.config import RunConfig, config_from_dict
from autointerp.records import read_records, records_file
from autointerp.rundir import CACHE_DIR, EXPLANATIONS_DIR, WHOLE, write_text_atomic
from autointerp.score.registry import get_scorer

EXPLAINER_RUN = "explainer"
TRUTH_RUN = "truth"
CODER_DIR = "coder"
TRUTH_MODEL = "planted truth"


def explanation_free(scorer: str) -> bool:
    """Whether a scorer never reads the explanation (scored in the explainer run only)."""
    return not get_scorer(scorer).needs_explanation


def run_config(config: RunConfig, base: Path, hookpoint: str, latents: list[int], run: str) -> RunConfig:
    """The user's config pointed at the planted coder and a run folder under `base`."""
    data = config.to_dict()
    data["out_dir"] = str(base / run)
    data["sparse_coder"] = {"path": str(base / CODER_DIR), "format": "sparsify", "hookpoints": [hookpoint]}
    data["latents"] = {**data["latents"], "indices": latents, "sample": None}
    data["controls"] = {**data["controls"], "random_explanation": run == TRUTH_RUN}
    if run == TRUTH_RUN:
        data["scorers"] = [s for s in data["scorers"] if not explanation_free(s)] or data["scorers"]
    return config_from_dict(data)


def share_cache(source: RunConfig, target: RunConfig) -> None:
    """Make `target`'s cache folder a relative link to `source`'s (one cache serves both runs)."""
    link = target.run_dir / CACHE_DIR
    if link.is_symlink() or link.exists():
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(source.run_dir / CACHE_DIR, link.parent), link)


def write_truth_records(
    explained: RunConfig, truth: RunConfig, hookpoint: str, planted: dict[str, Any]
) -> int:
    """Write the truth run's explanation records; returns how many carry a true explanation."""
    records = read_records(explained.run_dir / EXPLANATIONS_DIR, hookpoint)
    lines, written = [], 0
    for entry in planted["latents"]:
        record = records.get(entry["latent"])
        if entry["kind"] != "probe" or record is None:
            continue
        if not record.get("skipped"):
            record |= {"explanation": entry["explanation"], "error": None, "answer": None, "usage": None}
            written += 1
        record["explainer"] = {**(record.get("explainer") or {}), "model": TRUTH_MODEL}
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    write_text_atomic(records_file(truth.run_dir / EXPLANATIONS_DIR, hookpoint, WHOLE), "".join(lines))
    return written
