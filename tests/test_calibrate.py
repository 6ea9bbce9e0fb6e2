"""`autointerp calibrate` end to end on the tiny model: planted probes, an oracle and a random scorer."""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_config
from openai_stub import StubServer
from transformers import AutoTokenizer
from typer.testing import CliRunner

from autointerp.calibrate import BUILTIN_CLASSES, PlantSettings, classes_named, run_calibrate
from autointerp.calibrate.probes import fit_probes, noise_latents
from autointerp.calibrate.stats import mean_ci, paired_difference
from autointerp.cli import app
from autointerp.coders import load_file_coder
from autointerp.config import load_config
from autointerp.errors import UserError

HP = "layers.1"
CLASSES = ("the", "comma", "full_stop", "newline", "opening_bracket", "capitalised_word")
SECTIONS = {
    "sparse_coder": {"hookpoints": [HP]},
    "cache": {"n_tokens": 16384, "ctx_len": 64, "batch_size": 16, "sequences_per_part": 64},
    "latents": {"min_activations": 20},
    "examples": {"window": 12, "n_explain": 8, "n_test": 20, "n_negative": 20, "n_explain_negative": 0},
    "explainer": {"backend": "openai", "model": "stub", "base_url": "http://unused", "max_concurrency": 8},
    "scorers": ["detection", "fuzzing"],
}
BY_EXPLANATION = {c.explanation: c for c in BUILTIN_CLASSES}
SPAN = re.compile(r"<<(.*?)>>")


class Oracle:
    """Answers every prompt from the truth: which planted class an explanation names, and whether an
    excerpt (re-tokenized with the subject's tokenizer) holds tokens of that class."""

    def __init__(self, tokenizer_dir: Path):
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)

    def pieces(self, text: str) -> list[str]:
        ids = self.tokenizer(text.replace("\\n", "\n"), add_special_tokens=False)["input_ids"]
        return [self.tokenizer.decode([i]) for i in ids]

    def has_class(self, cls, text: str) -> bool:
        return any(cls.contains(piece) for piece in self.pieces(text))

    def __call__(self, messages: list[dict]) -> str:
        system, user = messages[0]["content"], messages[1]["content"] if len(messages) > 1 else ""
        if "studying one internal feature" in system:
            return f"[EXPLANATION]: {self.explain(messages[-1]['content'])}"
        explanation, _, excerpt = user.removeprefix("Explanation: ").partition("\n\nExcerpt: ")
        cls = BY_EXPLANATION[explanation]
        if "wrapped tokens are what" in system:
            spans = SPAN.findall(excerpt)
            return "1" if spans and all(self.has_class(cls, span) for span in spans) else "0"
        return "1" if self.has_class(cls, SPAN.sub(r"\1", excerpt)) else "0"

    def explain(self, prompt: str) -> str:
        """The class whose tokens make up most highlighted spans (a noise latent gets one too)."""
        spans = SPAN.findall(prompt.split("Excerpts where the latent is active:")[-1])
        counts = [sum(self.has_class(c, s) for s in spans) for c in BUILTIN_CLASSES]
        return BUILTIN_CLASSES[int(np.argmax(counts))].explanation


def coin(messages: list[dict]) -> str:
    """A scorer that answers at random without reading the explanation (seeded by the excerpt, so true and
    shuffled explanations get the same answers); it explains every latent with one fixed phrase."""
    if "studying one internal feature" in messages[0]["content"]:
        return "[EXPLANATION]: Some tokens of the documentation."
    excerpt = messages[1]["content"].partition("\n\nExcerpt: ")[2]
    return str(zlib.crc32(excerpt.encode()) % 2)


@pytest.fixture(scope="module")
def config_path(tmp_path_factory, tiny_model_dir, sparsify_coders_dir) -> Path:
    root = tmp_path_factory.mktemp("calibrate")
    return write_config(root / "config.yaml", tiny_model_dir, sparsify_coders_dir, **SECTIONS)


def calibrate(config_path: Path, answer, out_dir: Path, **settings):
    """Calibrate against a stub server answering with `answer`; returns (report, LLM calls made)."""
    with StubServer(answer) as stub:
        config = load_config(config_path, [f"explainer.base_url={stub.base_url}", f"out_dir={out_dir}"])
        settings = {"classes": classes_named(CLASSES), "noise": 3} | settings
        report = run_calibrate(config, PlantSettings(HP, **settings))
        return report, stub.calls


@pytest.fixture(scope="module")
def oracle_run(config_path, tiny_model_dir, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("oracle") / "run"
    report, _ = calibrate(config_path, Oracle(tiny_model_dir), out_dir)
    return out_dir, report


def test_probes_fire_on_their_class_in_held_out_text(oracle_run):
    _, report = oracle_run
    planted = report.result["planted"]
    probes = [r for r in report.result["heldout"] if r["kind"] == "probe"]
    assert {r["class"] for r in probes} | {d["class"] for d in planted["dropped"]} == set(CLASSES)
    assert len(probes) >= 5
    for row in probes:
        assert row["tokens"] >= 20, row
        assert row["precision"] >= 0.95 and row["recall"] >= 0.95, row
    noise = [r for r in report.result["heldout"] if r["kind"] == "noise"]
    assert len(noise) == 3 and all(0 < r["firing_rate"] < 0.1 for r in noise)


def test_an_oracle_scorer_reaches_one_and_separates(oracle_run):
    out_dir, report = oracle_run
    for scorer in ("detection", "fuzzing"):
        r = report.result["scorers"][scorer]
        true, shuffled = r["conditions"]["true"], r["conditions"]["shuffled"]
        assert true["n"] == shuffled["n"] >= 5 and true["failed"] == 0
        assert true["mean"] >= 0.95, (scorer, true)
        assert shuffled["mean"] < 0.75, (scorer, shuffled)
        assert r["separation"]["significant"] and r["separation"]["ci_low"] > 0.2
        assert r["verdict"].startswith("separates")
        assert r["conditions"]["explainer"]["mean"] >= 0.95  # the oracle explainer names the right class
    similarity = report.result["explainer_similarity"]
    assert similarity["matched"]["mean"] > 0.99 > similarity["random_pairs"]["mean"] + 0.3
    assert similarity["p_value"] < 0.05 and similarity["top1_accuracy"] == 1.0
    directory = out_dir / "calibration"
    written = json.loads((directory / "calibration.json").read_text())
    assert (
        written["scorers"]["detection"]["separation"] == report.result["scorers"]["detection"]["separation"]
    )
    assert "separates true from shuffled" in (directory / "calibration.md").read_text()
    assert "<table" in (directory / "calibration.html").read_text()
    assert not any(line.startswith("warning") for line in report.result["headline"])
    assert (directory / "truth" / "report" / "index.html").is_file()


@pytest.mark.slow
def test_a_scorer_answering_at_random_sits_at_chance_and_cannot_separate(config_path, tmp_path):
    report, _ = calibrate(config_path, coin, tmp_path / "run")
    for scorer in ("detection", "fuzzing"):
        r = report.result["scorers"][scorer]
        for condition in ("true", "shuffled", "explainer"):
            assert abs(r["conditions"][condition]["mean"] - 0.5) < 0.12, (scorer, condition, r)
        assert not r["separation"]["significant"]
        assert r["verdict"].startswith("CANNOT separate")
    text = (tmp_path / "run" / "calibration" / "calibration.md").read_text()
    assert "CANNOT separate true from shuffled explanations" in text


@pytest.mark.slow
def test_a_finished_calibration_reruns_without_llm_calls(config_path, tiny_model_dir, oracle_run):
    out_dir, report = oracle_run
    again, calls = calibrate(config_path, Oracle(tiny_model_dir), out_dir)
    assert calls == 0
    assert again.result["scorers"] == report.result["scorers"]


def test_changed_settings_need_force(config_path, tiny_model_dir, oracle_run):
    out_dir, _ = oracle_run
    with pytest.raises(UserError, match="planted coder made with other settings.*noise"):
        calibrate(config_path, Oracle(tiny_model_dir), out_dir, noise=2)


def test_the_planted_coder_is_a_sparsify_coder(oracle_run, config_path):
    from sparsify import SparseCoder

    out_dir, report = oracle_run
    folder = out_dir / "calibration" / "coder" / HP
    reference = SparseCoder.load_from_disk(folder)
    config = load_config(config_path, [f"sparse_coder.path={folder.parent}", "sparse_coder.format=sparsify"])
    ours = load_file_coder(config.sparse_coder, HP)
    x = torch.randn(64, ours.d_in)
    theirs = reference.encode(x)
    dense_theirs = torch.zeros(64, ours.num_latents).scatter(1, theirs.top_indices, theirs.top_acts)
    got = ours.encode(x)
    dense_ours = torch.zeros(64, ours.num_latents)
    dense_ours[got.rows, got.latents] = got.values
    torch.testing.assert_close(dense_ours, dense_theirs)
    assert ours.num_latents == len(report.result["planted"]["latents"])


def test_probes_and_noise_latents_on_synthetic_activations():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 16)).astype(np.float32) * rng.uniform(0.5, 5, size=16).astype(np.float32)
    labels = np.stack([x[:, 0] > 2.0, x[:, 3] - x[:, 5] < -4.0], axis=1)
    weights = fit_probes(torch.from_numpy(x), labels, seed=0)
    fired = (weights.encode(torch.from_numpy(x)) > 0).numpy()
    for c in range(2):
        hits = (fired[:, c] & labels[:, c]).sum()
        assert hits / fired[:, c].sum() > 0.95 and hits / labels[:, c].sum() > 0.95
    noise = noise_latents(torch.from_numpy(x), 3, rate=0.02, seed=0)
    rates = (noise.encode(torch.from_numpy(x)) > 0).float().mean(0)
    assert torch.allclose(rates, torch.full((3,), 0.02), atol=0.002)


def test_token_class_predicates():
    by_name = {c.name: c for c in BUILTIN_CLASSES}
    cases = {
        "digits": ([" 42", "7"], [" x7", "a"]),
        "opening_bracket": (["(", " [", "{'"], [")", "x("]),
        "capitalised_word": ([" Python", " The"], ["Python", " API", " the"]),
        "newline": (["\n", "  \n\n"], [" ", ""]),
        "indentation": (["    ", "  "], [" ", "", "\n "]),
        "the": ([" the", "The"], [" then", " they"]),
    }
    for name, (yes, no) in cases.items():
        assert all(by_name[name].contains(p) for p in yes), name
        assert not any(by_name[name].contains(p) for p in no), name


def test_paired_difference_and_small_samples():
    strong = paired_difference([0.9] * 6, [0.5, 0.6, 0.4, 0.5, 0.55, 0.45], seed=0)
    assert strong["significant"] and strong["p_value"] == pytest.approx(1 / 64)
    same = paired_difference([0.5, 0.7, 0.6], [0.5, 0.7, 0.6], seed=0)
    assert same["mean"] == 0 and same["p_value"] == 1.0 and not same["significant"]
    few = paired_difference([0.9, 0.9, 0.9, 0.9], [0.5, 0.5, 0.5, 0.5], seed=0)
    assert few["p_value"] == pytest.approx(1 / 16) and not few["significant"]
    assert mean_ci([0.7], seed=0)["ci_low"] is None


def test_cli_refuses_an_unknown_class_in_one_line(config_path):
    result = CliRunner().invoke(app, ["calibrate", str(config_path), "--classes", "digits,emoji"])
    assert result.exit_code == 2
    known = ", ".join(c.name for c in BUILTIN_CLASSES)
    assert result.output.strip().splitlines() == [
        f"error: --classes: unknown class 'emoji'; the built-in ones are {known}"
    ]
