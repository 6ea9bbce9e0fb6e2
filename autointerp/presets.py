"""Named presets that reproduce published protocols: each sets config defaults that explicit keys override.

Every value carries its source, so `docs/presets.md` and the tests can say where it comes from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PresetValue:
    key: str
    """Dotted config key, e.g. `examples.window`."""
    value: Any
    source: str
    """Where the published protocol states it."""


PAPER = "Paulo et al. 2025 (arXiv 2410.13928) and its code, EleutherAI delphi"
SAEBENCH = "SAEBench 0.6.0 evals/autointerp (eval_config.py, main.py)"
PRESETS: dict[str, tuple[PresetValue, ...]] = {
    "paper": (
        PresetValue("examples.window", 32, f"{PAPER}: 32-token examples"),
        PresetValue("examples.center", False, f"{PAPER}: fixed, uncentred windows"),
        PresetValue(
            "examples.test_windows",
            "random",
            "not the paper's: held-out windows at a seeded random offset around their peak (this tool's "
            "default, tested free of positional tells); like_explain gives the paper's placement",
        ),
        PresetValue("examples.n_explain", 40, f"{PAPER}: 40 activating examples shown to the explainer"),
        PresetValue("examples.explain_sampling", "quantiles", f"{PAPER}: 4 per activation decile"),
        PresetValue("examples.n_quantiles", 10, f"{PAPER}: deciles"),
        PresetValue("examples.n_test", 100, f"{PAPER}: 100 activating examples scored, 10 per decile"),
        PresetValue("examples.n_negative", 100, f"{PAPER}: 100 non-activating examples scored"),
        PresetValue("examples.negatives", "random", f"{PAPER}: random non-activating contexts"),
        PresetValue("examples.max_candidates", 10_000, f"{PAPER}: quantiles over the top 10,000 windows"),
        PresetValue("latents.min_activations", 200, f"{PAPER}: at least 200 activating windows"),
        PresetValue("explainer.show_activations", True, "delphi: activation values shown to the explainer"),
        PresetValue("scorer.examples_per_prompt", 5, f"{PAPER}: 5 examples per scorer prompt"),
        PresetValue(
            "scorer.fuzzing_mode", "non_activating", f"{PAPER}: random highlights on non-activating contexts"
        ),
        PresetValue("scorers", ["detection", "fuzzing"], "delphi's default scorers"),
    ),
    "saebench": (
        PresetValue("examples.window", 21, f"{SAEBENCH}: buffer 10 on each side of the chosen token"),
        PresetValue("examples.center", True, f"{SAEBENCH}: windows around the chosen token"),
        PresetValue("examples.n_explain", 15, f"{SAEBENCH}: n_top_ex_for_generation 10 + n_iw 5"),
        PresetValue("examples.explain_sampling", "top_iw", f"{SAEBENCH}: top and importance-weighted"),
        PresetValue("examples.n_top", 10, f"{SAEBENCH}: n_top_ex_for_generation"),
        PresetValue(
            "examples.n_test", 4, f"{SAEBENCH}: n_top_ex_for_scoring 2 + n_iw_sampled_ex_for_scoring 2"
        ),
        PresetValue("examples.test_sampling", "top_iw", f"{SAEBENCH}: top and importance-weighted"),
        PresetValue("examples.n_test_top", 2, f"{SAEBENCH}: n_top_ex_for_scoring"),
        PresetValue("examples.test_windows", "like_explain", f"{SAEBENCH}: scored windows placed alike"),
        PresetValue("examples.n_negative", 10, f"{SAEBENCH}: n_random_ex_for_scoring"),
        PresetValue("examples.negatives", "random", f"{SAEBENCH}: random sequences"),
        PresetValue("examples.max_candidates", None, f"{SAEBENCH}: top and weighted draws over all tokens"),
        PresetValue("examples.min_test", 10, f"{SAEBENCH}: every latent is scored on all 4 + 10 sequences"),
        PresetValue("latents.min_activations", 19, f"{SAEBENCH}: enough windows for 15 + 4 examples"),
        PresetValue("latents.sample", 1000, f"{SAEBENCH}: n_latents"),
        PresetValue("cache.ctx_len", 128, f"{SAEBENCH}: llm_context_size"),
        PresetValue("cache.n_tokens", 2_000_000, f"{SAEBENCH}: total_tokens"),
        PresetValue("explainer.kind", "saebench", f"{SAEBENCH}: its explainer prompt, with demonstrations"),
        PresetValue("explainer.highlight_threshold", 0.01, f"{SAEBENCH}: act_threshold_frac"),
        PresetValue("explainer.max_tokens", 30, f"{SAEBENCH}: max_tokens_in_explanation"),
        PresetValue("scorers", ["saebench"], f"{SAEBENCH}: the detection score, fraction of 14 right"),
    ),
}
"""Preset name -> the values it sets."""


def preset_defaults(name: str) -> dict[str, Any]:
    """The preset's values as a nested mapping of config sections."""
    nested: dict[str, Any] = {}
    for item in PRESETS[name]:
        *sections, last = item.key.split(".")
        node = nested
        for section in sections:
            node = node.setdefault(section, {})
        node[last] = item.value
    return nested


def merge_under(defaults: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """`data` with `defaults` filled in wherever it sets no value (recursively, section by section)."""
    merged = dict(defaults)
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_under(merged[key], value)
        else:
            merged[key] = value
    return merged


def presets_markdown() -> str:
    """docs/presets.md: every preset's values with their sources."""
    lines = [
        "# Presets: published protocols by name",
        "",
        "`preset: NAME` in a run config sets every value below as the default of its key; keys the",
        "config sets itself win. This page is written by `python scripts/write_presets_doc.py` from",
        "`autointerp/presets.py` (a test checks that it is up to date).",
    ]
    for name, values in PRESETS.items():
        lines += ["", f"## `{name}`", "", "| key | value | source |", "|---|---|---|"]
        lines += [f"| `{item.key}` | `{json.dumps(item.value)}` | {item.source} |" for item in values]
    return "\n".join(lines) + "\n"
