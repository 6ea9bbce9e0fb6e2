"""Latent list files for `latents.indices_file`: format, selection per hookpoint, one-line errors."""

from __future__ import annotations

import pytest
from test_cli import assert_one_line_error, invoke

from autointerp.config import config_from_dict
from autointerp.errors import ConfigError
from autointerp.examples import select_latents
from autointerp.latentfile import format_latent_file, read_latent_file

MINIMAL = {"model": {"path": "org/model"}, "sparse_coder": {"path": "org/saes"}}


def config_with_file(path, **latents):
    return config_from_dict({**MINIMAL, "latents": {"indices_file": str(path), **latents}})


def test_sections_round_trip_and_select_per_hookpoint(tmp_path):
    path = tmp_path / "partners.txt"
    path.write_text(format_latent_file({"layers.5": [9, 3, 3, 40], "layers.6": []}, ["made by a test"]))
    assert path.read_text().startswith("# made by a test\n[layers.5]\n3, 9, 40\n")
    assert read_latent_file(path) == {"layers.5": [3, 9, 40], "layers.6": []}
    config = config_with_file(path)
    assert select_latents(config.latents, 64, 0, "layers.5") == [3, 9, 40]
    assert select_latents(config.latents, 64, 0, "layers.6") == []
    with pytest.raises(
        ConfigError, match=r"latents.indices_file: .* no \[layers.7\] section .*layers.5, layers.6"
    ):
        select_latents(config.latents, 64, 0, "layers.7")
    with pytest.raises(ConfigError, match="latents.indices_file: latent 40 is out of range"):
        select_latents(config.latents, 40, 0, "layers.5")


def test_a_plain_list_applies_to_every_hookpoint_and_replaces_the_sample(tmp_path):
    path = tmp_path / "latents.txt"
    path.write_text("# chosen by hand\n5, 1\n\n10:13  # a range\n2 2\n")
    config = config_with_file(path, sample=3)
    for hookpoint in ("layers.1", "layers.2"):
        assert select_latents(config.latents, 100, 0, hookpoint) == [1, 2, 5, 10, 11, 12]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("1, x\n", "line 1: 'x' is not a latent index"),
        ("3\n[layers.1]\n4\n", "latents outside sections and [hookpoint] sections"),
        ("[layers.1]\n4\n[]\n", "line 3: '[]' is not a [hookpoint] section header"),
        ("1:\n", "line 1: '1:' is not a latent index"),
    ],
)
def test_bad_files_are_config_errors(tmp_path, text, fragment):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        config_with_file(path)
    assert str(error.value).startswith("latents.indices_file: ") and fragment in str(error.value)


def test_missing_file_and_both_keys_fail_at_load(tmp_path):
    with pytest.raises(ConfigError, match="latents.indices_file: .* is not a file"):
        config_with_file(tmp_path / "missing.txt")
    path = tmp_path / "ok.txt"
    path.write_text("1\n")
    with pytest.raises(ConfigError, match="latents.indices_file: set either latents.indices or this"):
        config_with_file(path, indices=[1])


def test_cli_reports_a_missing_file_in_one_line(tmp_path, tiny_config):
    override = f"latents.indices_file={tmp_path / 'partners.txt'}"
    assert_one_line_error(
        *invoke("explain", tiny_config, "--set", override), "latents.indices_file", "is not a file"
    )
