"""Training missing sparsify coders: written in sparsify's format, read back by the loader, trained once."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_config
from transformers import AutoTokenizer
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.coders import load_file_coder
from autointerp.config import RunConfig, config_from_dict, load_config
from autointerp.corpus import iter_documents, iter_sequences, special_token_ids
from autointerp.errors import ConfigError, UserError
from autointerp.training import TRAINING_FILE, ensure_coders
from autointerp.training import stage as training_stage

HOOKPOINT = "layers.1"
TRAIN = {"enabled": True, "n_tokens": 4096, "ctx_len": 64, "num_latents": 64, "k": 4, "batch_size": 128}


def make_config(model_dir: Path, root: Path, **train) -> RunConfig:
    return config_from_dict(
        {
            "model": {"path": str(model_dir), "device": "cpu"},
            "sparse_coder": {
                "path": str(root),
                "format": "sparsify",
                "hookpoints": [HOOKPOINT],
                "train": {**TRAIN, "epochs": 4, "lr": 3e-3, **train},
            },
            "cache": {"batch_size": 16},
        }
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """One training run shared by the tests that only read its result."""
    config = make_config(tiny_model_dir, tmp_path_factory.mktemp("trained") / "saes")
    return config, ensure_coders(config)


def test_trained_coder_is_read_by_the_loader_and_matches_sparsify(trained):
    from sparsify import SparseCoder

    config, report = trained
    assert report.trained == [HOOKPOINT]
    folder = Path(config.sparse_coder.path) / HOOKPOINT
    assert {p.name for p in folder.iterdir()} == {"cfg.json", "sae.safetensors", TRAINING_FILE}
    coder = load_file_coder(config.sparse_coder, HOOKPOINT)
    reference = SparseCoder.load_from_disk(folder)
    assert (coder.num_latents, coder.d_in, coder.k) == (64, 32, 4)
    x = torch.randn(50, 32) * 3
    ours = coder.encode(x)
    dense = torch.zeros(50, 64)
    dense[ours.rows, ours.latents] = ours.values
    top = reference.encode(x)
    expected = torch.zeros(50, 64).scatter_(1, top.top_indices, top.top_acts)
    torch.testing.assert_close(dense, expected)


def test_training_learns_and_skips_special_tokens(trained, tiny_model_dir):
    config, report = trained
    record = report.records[HOOKPOINT]
    assert record["fvu_train"] < 0.8 * record["fvu_init"] and record["fvu_heldout"] < record["fvu_init"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    sequences = torch.from_numpy(
        np.stack(list(islice(iter_sequences(iter_documents(config.dataset), tokenizer, 64), 64)))
    )
    ordinary = ~torch.isin(sequences, torch.tensor(special_token_ids(tokenizer)))
    assert record["train_tokens"] + record["heldout_tokens"] == int(ordinary.sum()) < sequences.numel()
    assert record["heldout_tokens"] == int(ordinary[-3:].sum())  # 5% of 64 sequences, rounded


def test_second_call_reuses_the_coder(trained, monkeypatch):
    config, _ = trained
    monkeypatch.setattr(training_stage, "load_subject", _fail)
    report = ensure_coders(config)
    assert report.status == {HOOKPOINT: "already trained"} and report.trained == []


def test_other_settings_are_refused_until_forced(tmp_path, tiny_model_dir):
    ensure_coders(make_config(tiny_model_dir, tmp_path, epochs=1))
    changed = make_config(tiny_model_dir, tmp_path, k=3, epochs=2)
    with pytest.raises(
        UserError, match=r"sparse_coder\.train\.epochs, sparse_coder\.train\.k changed.*--force"
    ):
        ensure_coders(changed)
    assert ensure_coders(changed, force=True).trained == [HOOKPOINT]
    assert load_file_coder(changed.sparse_coder, HOOKPOINT).k == 3


def test_coders_not_trained_here_are_kept_and_empty_folders_refused(
    tmp_path, tiny_model_dir, sparsify_coders_dir, monkeypatch
):
    monkeypatch.setattr(training_stage, "load_subject", _fail)
    report = ensure_coders(make_config(tiny_model_dir, sparsify_coders_dir), force=True)
    assert report.status == {HOOKPOINT: "kept: not trained by autointerp"}
    (tmp_path / HOOKPOINT).mkdir()
    with pytest.raises(UserError, match="holds no sparse coder"):
        ensure_coders(make_config(tiny_model_dir, tmp_path))


def test_a_failed_save_leaves_no_folder(tmp_path, tiny_model_dir, monkeypatch):
    from sparsify import SparseCoder

    def save_then_fail(self, path):
        original(self, path)
        raise OSError("disk full")

    original = SparseCoder.save_to_disk
    monkeypatch.setattr(SparseCoder, "save_to_disk", save_then_fail)
    config = make_config(tiny_model_dir, tmp_path / "saes", epochs=1)
    with pytest.raises(OSError, match="disk full"):
        ensure_coders(config)
    assert list((tmp_path / "saes").iterdir()) == []


@pytest.mark.parametrize(
    ("train", "format_", "key"),
    [
        ({"enabled": True}, "saelens", "sparse_coder.train.enabled"),
        ({"n_tokens": 100, "ctx_len": 64}, "sparsify", "sparse_coder.train.n_tokens"),
        ({"num_latents": 8, "k": 16}, "sparsify", "sparse_coder.train.num_latents"),
        ({"lr": 0}, "sparsify", "sparse_coder.train.lr"),
        ({"epochs": 0}, "auto", "sparse_coder.train.epochs"),
        ({"ctx_len": 1}, "auto", "sparse_coder.train.ctx_len"),
        ({"auxk_alpha": -1}, "auto", "sparse_coder.train.auxk_alpha"),
        ({"enabld": True}, "auto", "sparse_coder.train.enabld"),
    ],
)
def test_invalid_train_settings_name_their_key(train, format_, key):
    data = {"model": {"path": "m"}, "sparse_coder": {"path": "s", "format": format_, "train": train}}
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert info.value.key == key


def test_disabled_training_and_too_few_latents_are_config_errors(tmp_path, tiny_model_dir):
    with pytest.raises(ConfigError, match="sparse_coder.train.enabled"):
        ensure_coders(make_config(tiny_model_dir, tmp_path, enabled=False))
    config = make_config(tiny_model_dir, tmp_path / "saes", num_latents=None, expansion_factor=1, k=40)
    with pytest.raises(ConfigError, match="sparse_coder.train.k"):
        ensure_coders(config)


def test_cli_train_then_cache_reuses_the_coder(tmp_path, tiny_model_dir):
    root = tmp_path / "saes"
    train = {**TRAIN, "epochs": 1}
    config = write_config(
        tmp_path / "config.yaml",
        tiny_model_dir,
        root,
        sparse_coder={"hookpoints": [HOOKPOINT], "train": train},
    )
    code, output = _invoke("train", config)
    assert code == 0 and "trained" in output and "FVU" in output, output
    code, output = _invoke("cache", config)
    assert code == 0 and "already cached" not in output and "train:" not in output, output
    code, output = _invoke("train", config, "--set", "sparse_coder.train.k=5")
    assert code == 2 and "--force" in output


def test_demo_config_trains_a_topk_sae_under_the_user_cache():
    config = load_config(Path(__file__).parents[1] / "configs" / "demo.yaml")
    coder = config.sparse_coder
    assert coder.train.enabled and coder.format == "sparsify" and coder.hookpoints == ("layers.6",)
    assert coder.path.startswith("~/.cache/") and (coder.train.num_latents, coder.train.k) == (4096, 32)


def _invoke(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def _fail(*_args, **_kwargs):
    raise AssertionError("the subject model was loaded")


def test_a_failed_forced_retraining_keeps_the_old_coder(tmp_path, tiny_model_dir, monkeypatch):
    ensure_coders(make_config(tiny_model_dir, tmp_path, epochs=1))

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(training_stage, "fit_sparse_coder", out_of_memory)
    with pytest.raises(RuntimeError, match="out of memory"):
        ensure_coders(make_config(tiny_model_dir, tmp_path, epochs=2), force=True)
    config = make_config(tiny_model_dir, tmp_path, epochs=1)
    assert load_file_coder(config.sparse_coder, HOOKPOINT).num_latents == 64
    assert ensure_coders(config).status == {HOOKPOINT: "already trained"}
