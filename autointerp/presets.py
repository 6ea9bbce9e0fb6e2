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
PRESETS: dict[str, tuple[PresetValue, ...]] = {
    "paper": (
        PresetValue("examples.window", 32, f"{PAPER}: 32-token examples"),
        PresetValue("examples.center", False, f"{PAPER}: fixed, uncentred windows"),
        PresetValue("examples.n_explain", 40, f"{PAPER}: 40 activating examples shown to the explainer"),
        PresetValue("examples.explain_sampling", "quantiles", f"{PAPER}: 4 per activation decile"),
        PresetValue("examples.n_quantiles", 10, f"{PAPER}: deciles"),
        PresetValue("examples.n_test", 100, f"{PAPER}: 100 activating examples scored, 10 per decile"),
        PresetValue("examples.n_negative", 100, f"{PAPER}: 100 non-activating examples scored"),
        PresetValue("examples.negatives", "random", f"{PAPER}: random non-activating contexts"),
        PresetValue("explainer.show_activations", True, "delphi: activation values shown to the explainer"),
        PresetValue("scorer.examples_per_prompt", 5, f"{PAPER}: 5 examples per scorer prompt"),
        PresetValue(
            "scorer.fuzzing_mode", "non_activating", f"{PAPER}: random highlights on non-activating contexts"
        ),
        PresetValue("scorers", ["detection", "fuzzing"], "delphi's default scorers"),
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
