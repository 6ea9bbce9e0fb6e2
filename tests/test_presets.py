"""Presets reproduce published protocols: each value pinned, explicit keys win, every value documented."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from autointerp.config import config_from_dict, load_config
from autointerp.errors import ConfigError
from autointerp.presets import PRESETS, presets_markdown

BASE = {"model": {"path": "m"}, "sparse_coder": {"path": "c", "hookpoints": ["layers.6"]}}
DOCS = Path(__file__).resolve().parents[1] / "docs" / "presets.md"


def value_at(config, key: str):
    node = config
    for part in key.split("."):
        node = getattr(node, part)
    return list(node) if isinstance(node, tuple) else node


@pytest.mark.parametrize("name", list(PRESETS))
def test_a_preset_sets_each_of_its_values(name):
    config = config_from_dict({**BASE, "preset": name})
    for item in PRESETS[name]:
        assert value_at(config, item.key) == item.value, item.key


def test_the_published_values_are_pinned():
    paper = {item.key: item.value for item in PRESETS["paper"]}
    assert paper["examples.window"] == 32 and paper["examples.center"] is False
    assert (paper["examples.n_explain"], paper["examples.n_test"], paper["examples.n_negative"]) == (
        40,
        100,
        100,
    )
    assert paper["scorer.examples_per_prompt"] == 5 and paper["scorer.fuzzing_mode"] == "non_activating"
    assert paper["explainer.show_activations"] is True


def test_explicit_keys_override_the_preset(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**BASE, "preset": "paper", "examples": {"window": 16}}))
    config = load_config(path, ["scorer.examples_per_prompt=1"])
    assert config.examples.window == 16 and config.scorer.examples_per_prompt == 1
    assert config.examples.center is False and config.preset == "paper"
    assert load_config(path, ["preset=null"]).examples.center is True


def test_an_unknown_preset_names_the_choices():
    with pytest.raises(ConfigError, match="preset: unknown preset 'papr'; one of paper"):
        config_from_dict({**BASE, "preset": "papr"})


def test_docs_list_every_value_and_its_source():
    assert DOCS.read_text() == presets_markdown(), "run python scripts/write_presets_doc.py"
