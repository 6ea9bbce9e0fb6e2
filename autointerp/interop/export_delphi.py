"""delphi's run layout (`delphi/__main__.py`), which its `delphi.log.result_analysis` reads.

```
<out>/run_config.json                              the run's settings under delphi's names
<out>/explanations/<hookpoint>_latent<i>.txt        the explanation as a JSON string
<out>/scores/detection/<hookpoint>_latent<i>.txt    a JSON list of ClassifierOutput items
<out>/scores/fuzz/<hookpoint>_latent<i>.txt         (fuzzing, under delphi's name)
<out>/log/hookpoint_firing_counts.pt               {hookpoint: int64 tensor of firing counts per latent}
```
ClassifierOutput items are `str_tokens`, `activations`, `distance` (the activation quantile, -1 for a
non-activating example), `activating`, `prediction`, `probability`, `correct`. Only detection and fuzzing
are written: delphi's analysis reads classifier scores only, and would fail on other score files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from autointerp.interop.export import ExportOptions
from autointerp.interop.rundata import RunData

SCORER_NAMES = {"detection": "detection", "fuzzing": "fuzz"}
"""Our scorer -> delphi's score folder."""


def export_delphi(run: RunData, out: Path, options: ExportOptions) -> None:
    (out / "explanations").mkdir(parents=True)
    for hookpoint in run.hookpoints:
        safe = hookpoint.replace("/", "--")
        for latent, record in run.explanations(hookpoint).items():
            if record.get("explanation"):
                path = out / "explanations" / f"{safe}_latent{latent}.txt"
                path.write_text(json.dumps(record["explanation"], ensure_ascii=False))
        for scorer, name in SCORER_NAMES.items():
            if scorer in run.scorers:
                _write_scores(run, hookpoint, scorer, out / "scores" / name, safe)
    _write_counts(run, out / "log" / "hookpoint_firing_counts.pt")
    (out / "run_config.json").write_text(json.dumps(run_config(run), indent=4) + "\n")


def _write_scores(run: RunData, hookpoint: str, scorer: str, folder: Path, safe: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    texts = run.texts
    for latent, record in run.scores(scorer, hookpoint).items():
        examples = record.get("examples") or []
        if not examples or not record.get("explanation"):
            continue
        items = [classifier_output(e, texts.pieces(e["tokens"])) for e in examples]
        (folder / f"{safe}_latent{latent}.txt").write_text(json.dumps(items, ensure_ascii=False))


def classifier_output(example: dict[str, Any], str_tokens: list[str]) -> dict[str, Any]:
    """One scored example as delphi's ClassifierOutput."""
    prediction = example.get("prediction")
    return {
        "str_tokens": str_tokens,
        "activations": example["activations"],
        "distance": example["quantile"] if example.get("quantile") is not None else -1,
        "activating": bool(example["label"]),
        "prediction": None if prediction is None else bool(prediction),
        "probability": example.get("probability"),
        "correct": None if prediction is None else prediction == example["label"],
    }


def _write_counts(run: RunData, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    counts = {hp: torch.as_tensor(run.stats(hp)["firing_count"], dtype=torch.int64) for hp in run.hookpoints}
    torch.save(counts, path)


def run_config(run: RunData) -> dict[str, Any]:
    """delphi's RunConfig keys that describe the run, from this run's config."""
    raw = run.raw
    examples, cache = raw.get("examples") or {}, raw.get("cache") or {}
    scorer, explainer = raw.get("scorer") or {}, raw.get("explainer") or {}
    return {
        "name": run.name,
        "model": run.model,
        "sparse_model": (raw.get("sparse_coder") or {}).get("path"),
        "hookpoints": run.hookpoints,
        "explainer_model": explainer.get("model"),
        "scorers": [SCORER_NAMES[s] for s in SCORER_NAMES if s in run.scorers],
        "num_examples_per_scorer_prompt": scorer.get("examples_per_prompt"),
        "seed": raw.get("seed"),
        "cache_cfg": {
            "dataset_repo": (raw.get("dataset") or {}).get("path"),
            "cache_ctx_len": cache.get("ctx_len"),
            "n_tokens": cache.get("n_tokens"),
        },
        "constructor_cfg": {
            "example_ctx_len": examples.get("window"),
            "min_examples": (raw.get("latents") or {}).get("min_activations"),
            "n_non_activating": examples.get("n_negative"),
            "non_activating_source": examples.get("negatives"),
            "center_examples": examples.get("center"),
        },
        "sampler_cfg": {
            "n_examples_train": examples.get("n_explain"),
            "n_examples_test": examples.get("n_test"),
            "n_quantiles": examples.get("n_quantiles"),
            "train_type": examples.get("explain_sampling"),
            "test_type": "quantiles",
        },
        "exported_by": "autointerp",
    }
