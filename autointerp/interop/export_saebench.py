"""SAEBench's autointerp result file (`sae_bench/evals/autointerp/eval_output.py`, v0.6.0), one per hookpoint:
`<out>/<release>_<sae_id>_eval_results.json`, with SAE Lens's release and id for a `saelens:<release>/<id>`
coder, else release `autointerp-<run name>` and the hookpoint as id.

Only a run made with SAEBench's protocol is exported: 10 top + 5 importance-weighted examples explained;
2 top + 2 importance-weighted + 10 random sequences of 21 tokens (buffer 10 around the peak) scored in one
prompt whose answer lists the activating indices; a latent's score is the fraction of the 14 classified
correctly (answering "none" gets 10/14). The protocol is checked against the run's `config.yaml`;
anything else is refused, naming the keys that differ.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autointerp.errors import UserError
from autointerp.interop.export import ExportOptions
from autointerp.interop.rundata import RunData
from autointerp.presets import PRESETS

EVAL_TYPE_ID = "autointerp"
SCORER = "saebench"


@dataclass(frozen=True)
class Requirement:
    key: str
    """Dotted config key."""
    value: Any
    why: str

    def actual(self, raw: dict[str, Any]) -> Any:
        node: Any = raw
        for part in self.key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    def met(self, raw: dict[str, Any]) -> bool:
        actual = self.actual(raw)
        if self.key == "scorers":
            return isinstance(actual, list) and self.value in actual
        return actual == self.value


RUN_SIZE_KEYS = frozenset({"latents.sample", "latents.min_activations", "cache.n_tokens", "cache.ctx_len"})
"""Preset values that size a run (how many latents and tokens) rather than define the protocol."""
PROTOCOL = tuple(
    Requirement(item.key, SCORER if item.key == "scorers" else item.value, item.source)
    for item in PRESETS["saebench"]
    if item.key not in RUN_SIZE_KEYS
)
"""SAEBench's autointerp protocol: the values `preset: saebench` sets, but those that only size the run."""


def protocol_differences(raw: dict[str, Any]) -> list[str]:
    """`key is X (SAEBench: Y, why)` for each protocol value the config does not have."""
    return [
        f"{r.key} is {json.dumps(r.actual(raw))} (SAEBench: {json.dumps(r.value)}, {r.why})"
        for r in PROTOCOL
        if not r.met(raw)
    ]


def export_saebench(run: RunData, out: Path, options: ExportOptions) -> None:
    differences = protocol_differences(run.raw)
    if differences:
        raise UserError(
            "--format saebench: this run was not made with SAEBench's protocol, so its scores are not "
            f"SAEBench scores: {'; '.join(differences)}"
        )
    if SCORER not in run.scorers:
        raise UserError(f"--format saebench: {run.run_dir} has no {SCORER} scores: run `autointerp score`")
    for hookpoint in run.hookpoints:
        results = latent_results(run, hookpoint)
        if not results:
            continue
        release, sae_id = sae_lens_ids(run, hookpoint)
        name = f"{release}_{sae_id}_eval_results.json".replace("/", "_")  # SAEBench's get_results_filepath
        data = eval_output(run, hookpoint, (release, sae_id), results)
        (out / name).write_text(json.dumps(data, indent=2) + "\n")


def sae_lens_ids(run: RunData, hookpoint: str) -> tuple[str, str]:
    """(release, sae id): SAE Lens's when the coder was loaded as `saelens:<release>/<sae_id>` (one
    hookpoint), else `autointerp-<run name>` and the hookpoint."""
    path = str((run.raw.get("sparse_coder") or {}).get("path") or "")
    if path.startswith("saelens:") and "/" in path and len(run.hookpoints) == 1:
        release, _, sae_id = path.removeprefix("saelens:").partition("/")
        return release, sae_id
    return f"autointerp-{run.name}", hookpoint


def latent_results(run: RunData, hookpoint: str) -> dict[str, dict[str, Any]]:
    """SAEBench's per-latent results (`eval_result_unstructured`): scored latents only, as SAEBench drops
    latents whose answer it cannot parse. Indices are 1-based positions in the record's example order."""
    results = {}
    for latent, record in run.scores(SCORER, hookpoint).items():
        examples = record.get("examples") or []
        if record.get("score") is None or any(e.get("prediction") is None for e in examples):
            continue
        predictions = [i for i, e in enumerate(examples, start=1) if e["prediction"] == 1]
        correct = [i for i, e in enumerate(examples, start=1) if e["label"] == 1]
        hits = sum(e["prediction"] == e["label"] for e in examples)
        results[str(latent)] = {
            "latent": latent,
            "explanation": record["explanation"],
            "predictions": predictions,
            "correct seqs": correct,
            "score": hits / len(examples),
            "logs": _logs(examples),
        }
    return results


def _logs(examples: list[dict[str, Any]]) -> str:
    lines = ["Scoring phase", "idx | active | predicted | sequence"]
    for i, e in enumerate(examples, start=1):
        lines.append(f"{i} | {bool(e['label'])} | {bool(e['prediction'])} | {e.get('shown', '')}")
    return "\n".join(lines)


def eval_output(
    run: RunData, hookpoint: str, ids: tuple[str, str], results: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The AutoInterpEvalOutput object as SAEBench writes it (`asdict` of its pydantic dataclass)."""
    scores = np.array([r["score"] for r in results.values()], dtype=float)
    return {
        "eval_type_id": EVAL_TYPE_ID,
        "eval_config": eval_config(run, len(results)),
        "eval_id": str(uuid.uuid4()),
        "datetime_epoch_millis": int(time.time() * 1000),
        "eval_result_metrics": {
            "autointerp": {
                "autointerp_score": float(scores.mean()),
                "autointerp_std_dev": float(scores.std(ddof=1)) if len(scores) > 1 else 0.0,
            }
        },
        "eval_result_details": [],
        "sae_bench_commit_hash": "not run by SAEBench: exported by autointerp",
        "sae_lens_id": ids[1],
        "sae_lens_release_id": ids[0],
        "sae_lens_version": None,
        "sae_cfg_dict": {
            "d_sae": run.cache(hookpoint).num_latents,
            "hook_name": hookpoint,
            "model_name": run.model,
            "sparse_coder_path": (run.raw.get("sparse_coder") or {}).get("path"),
        },
        "eval_result_unstructured": results,
    }


def eval_config(run: RunData, n_latents: int) -> dict[str, Any]:
    """AutoInterpEvalConfig's fields from the run's config (the protocol ones are SAEBench's by check)."""
    raw = run.raw
    cache, explainer = raw.get("cache") or {}, raw.get("explainer") or {}
    return {
        "model_name": run.model,
        "n_latents": n_latents,
        "override_latents": None,
        "dead_latent_threshold": float((raw.get("latents") or {}).get("min_activations") or 0),
        "random_seed": int(raw.get("seed") or 0),
        "dataset_name": str((raw.get("dataset") or {}).get("path") or ""),
        "llm_context_size": int(cache.get("ctx_len") or 0),
        "llm_batch_size": int(cache.get("batch_size") or 0),
        "llm_dtype": str((raw.get("model") or {}).get("dtype") or ""),
        "buffer": 10,
        "no_overlap": True,
        "act_threshold_frac": float(explainer.get("highlight_threshold") or 0.0),
        "total_tokens": int(cache.get("n_tokens") or 0),
        "scoring": True,
        "max_tokens_in_explanation": int(explainer.get("max_tokens") or 0),
        "use_demos_in_explanation": True,
        "n_top_ex_for_generation": 10,
        "n_iw_sampled_ex_for_generation": 5,
        "n_top_ex_for_scoring": 2,
        "n_random_ex_for_scoring": 10,
        "n_iw_sampled_ex_for_scoring": 2,
    }
