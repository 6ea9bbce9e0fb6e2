"""The compare stage on tiny synthetic runs: matching, explanation similarity, interpretability, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from cache_factory import write_synthetic_cache
from conftest import HIDDEN, write_config
from openai_stub import StubServer
from scipy.optimize import linear_sum_assignment
from typer.testing import CliRunner

from autointerp.cache import run_cache
from autointerp.cli import app
from autointerp.compare import run_compare
from autointerp.compare.matching import assign, match_activations, match_decoders, top_k_candidates
from autointerp.config import load_config
from autointerp.errors import UserError
from autointerp.latentfile import read_latent_file
from autointerp.records import read_records
from autointerp.rundir import MANIFEST_FILE, cache_dir, read_json, write_json_atomic

SEQUENCES, CTX_LEN, WIDTH = 8, 16, 16
HOOKPOINT = "layers.1"
EXPLANATIONS = [
    "numbers in Python code", "French words", "closing parentheses", "names of cities", "past tense verbs",
    "HTML tags", "mathematical equations", "the word 'the'", "emotions like happiness", "colours",
    "animals and pets", "dates and years", "legal terminology", "cooking recipes", "sports teams",
    "programming keywords", "question marks", "plural nouns", "medical symptoms", "weather descriptions",
    "musical instruments", "currency amounts", "chemical elements", "family members", "travel and airports",
    "computer hardware", "negation words", "first person pronouns", "religious terms", "car brands",
    "body parts", "space and planets", "file paths", "email addresses", "military ranks",
    "furniture", "trees and plants", "university courses", "clothing items", "ocean and sea life",
]  # fmt: skip
LATENTS = len(EXPLANATIONS)


EXPLAINED = {"error": None, "skipped": None}
SCORE_RECORD = {"control": None, "metrics": {}, "examples": [], "usage": None, "error": None, "skipped": None}


def planted(seed: int = 0) -> dict:
    """Tokens, activations [tokens, latents], decoder [latents, WIDTH], one explanation per latent."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 300, size=(SEQUENCES, CTX_LEN))
    fires = rng.random((SEQUENCES * CTX_LEN, LATENTS)) < 0.15
    fires[rng.integers(0, SEQUENCES * CTX_LEN, LATENTS), np.arange(LATENTS)] = True
    acts = np.where(fires, rng.uniform(0.5, 3.0, fires.shape), 0.0).astype(np.float32)
    decoder = rng.normal(size=(LATENTS, WIDTH)).astype(np.float32)
    return {"tokens": tokens, "acts": acts, "decoder": decoder, "explanations": list(EXPLANATIONS)}


def permuted(coder: dict, perm: np.ndarray) -> dict:
    """The same coder with latent j of the result being latent perm[j] of `coder`."""
    return {
        "tokens": coder["tokens"],
        "acts": coder["acts"][:, perm],
        "decoder": coder["decoder"][perm] if coder["decoder"] is not None else None,
        "explanations": [coder["explanations"][i] for i in perm],
    }


def make_run(
    root: Path,
    name: str,
    coder: dict,
    hookpoint: str = HOOKPOINT,
    scores: dict[str, list[float]] | None = None,
    config: bool = False,
    explained: list[int] | None = None,
) -> Path:
    """A run directory with a finished cache, explanations (of `explained`, default all) and (optionally)
    scores (of the latents in order) and config.yaml."""
    run_dir = root / name
    hp_dir = cache_dir(run_dir, hookpoint)
    num_latents = coder["acts"].shape[1]
    shard = max(16, num_latents // 4)
    write_synthetic_cache(hp_dir, coder["tokens"], coder["acts"], num_latents, shard, coder["decoder"])
    manifest = read_json(hp_dir / MANIFEST_FILE)
    write_json_atomic(hp_dir / MANIFEST_FILE, {**manifest, "config_hash": f"hash-{name}-{hookpoint}"})
    latents = range(len(coder["explanations"])) if explained is None else explained
    explanations = [
        {"latent": i, "hookpoint": hookpoint, "explanation": coder["explanations"][i], **EXPLAINED}
        for i in latents
    ]
    _write_jsonl(run_dir / "explanations" / f"{hookpoint}.jsonl", explanations)
    for scorer, values in (scores or {}).items():
        records = [
            {"latent": i, "hookpoint": hookpoint, "scorer": scorer, "score": v, **SCORE_RECORD}
            for i, v in zip(latents, values, strict=False)
        ]
        _write_jsonl(run_dir / "scores" / scorer / f"{hookpoint}.jsonl", records)
    if config:
        body = {"name": name, "out_dir": str(run_dir), "model": {"path": "unused"}}
        body["sparse_coder"] = {"path": "unused", "hookpoints": [hookpoint]}
        (run_dir / "config.yaml").write_text(yaml.safe_dump(body))
    return run_dir


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture(scope="module")
def embed():
    """The packaged MiniLM, loaded once, each text embedded once."""
    from autointerp.embedding import Embedder

    embedder, vectors = Embedder(), {}

    def cached(texts: list[str]) -> np.ndarray:
        new = sorted(set(texts) - set(vectors))
        if new:
            vectors.update(zip(new, embedder(new), strict=True))
        return np.stack([vectors[text] for text in texts])

    return cached


@pytest.fixture
def base() -> dict:
    return planted()


@pytest.fixture
def perm() -> np.ndarray:
    return np.random.default_rng(7).permutation(LATENTS)


def test_decoder_matching_recovers_a_permutation(tmp_path, base, perm, embed):
    a = make_run(tmp_path, "a", base)
    b = make_run(tmp_path, "b", permuted(base, perm))
    report = run_compare([a, b], tmp_path / "out", embed=embed)
    (pair,) = report.pairs
    assert pair.matching.method == "decoder cosine"
    assert len(pair.matching.a) == LATENTS and pair.matching.unmatched == 0
    assert np.array_equal(perm[pair.matching.b], pair.matching.a)
    similarity = pair.similarity.summary
    assert similarity["n"] == LATENTS and similarity["mean"] == pytest.approx(1.0, abs=1e-5)
    assert pair.similarity.baseline_summary["mean"] < 0.5


def test_correlation_matching_recovers_a_permutation(tmp_path, base, perm, embed):
    """Two hookpoints of one run directory: other activations, so matched by activation correlation."""
    a = make_run(tmp_path, "a", base)
    make_run(tmp_path, "a", {**permuted(base, perm), "decoder": None}, hookpoint="layers.2")
    report = run_compare([a], tmp_path / "out", embed=embed)
    assert [run.label for run in report.runs] == ["a/layers.1", "a/layers.2"]
    (pair,) = report.pairs
    assert pair.matching.method == "activation correlation"
    assert np.array_equal(perm[pair.matching.b], pair.matching.a)
    assert np.allclose(pair.matching.similarity, 1.0, atol=1e-5)


def test_a_run_with_itself_is_similarity_one(tmp_path, base, embed):
    a = make_run(tmp_path, "a", base)
    report = run_compare([a, a], tmp_path / "out", embed=embed)
    (pair,) = report.pairs
    assert pair.matching.method == "same coder"
    assert pair.similarity.summary["mean"] == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(report.similarity_matrix(), 1.0, atol=1e-5)
    assert [run.label for run in report.runs] == ["a/layers.1", "a/layers.1#2"]


def test_a_random_coder_is_near_the_baseline(tmp_path, base, perm, embed):
    rng = np.random.default_rng(3)
    random_coder = {**planted(seed=5), "explanations": [EXPLANATIONS[i] for i in rng.permutation(LATENTS)]}
    a = make_run(tmp_path, "a", base)
    b = make_run(tmp_path, "b", permuted(base, perm))
    r = make_run(tmp_path, "r", random_coder)
    report = run_compare([a, b, r], tmp_path / "out", embed=embed)
    by_pair = {(p.a.label, p.b.label): p.similarity for p in report.pairs}
    random_pair = by_pair[("a/layers.1", "r/layers.1")]
    assert abs(random_pair.summary["mean"] - random_pair.baseline_summary["mean"]) < 0.1
    assert by_pair[("a/layers.1", "b/layers.1")].summary["mean"] > random_pair.summary["mean"] + 0.5
    matrix = report.similarity_matrix()
    assert matrix.shape == (3, 3) and np.allclose(matrix, matrix.T)
    csv_rows = (report.out_dir / "similarity_matrix.csv").read_text().splitlines()
    assert csv_rows[0] == "run,a/layers.1,b/layers.1,r/layers.1" and len(csv_rows) == 4


@pytest.mark.parametrize(("num_a", "num_b", "seed"), [(30, 30, 0), (25, 40, 1), (40, 25, 2), (1, 5, 3)])
def test_sparse_assignment_with_all_candidates_equals_dense(num_a, num_b, seed):
    rng = np.random.default_rng(seed)
    sims = rng.uniform(-1, 1, size=(num_a, num_b))
    rows, cols, values = top_k_candidates(lambda s, e: sims[s:e], num_a, num_b, k=num_b, block=7)
    a, b, matched = assign(rows, cols, values, num_a, num_b)
    dense_a, dense_b = linear_sum_assignment(sims, maximize=True)
    assert sorted(zip(a, b, strict=True)) == sorted(zip(dense_a, dense_b, strict=True))
    assert np.allclose(matched, sims[a, b])


def test_sparse_matching_of_a_noisy_permutation_equals_dense(base, perm):
    rng = np.random.default_rng(1)
    noisy = base["decoder"][perm] + 0.3 * rng.normal(size=base["decoder"].shape)
    sparse = match_decoders(base["decoder"], noisy, k=3, block=LATENTS * 2)
    unit_a = base["decoder"] / np.linalg.norm(base["decoder"], axis=1, keepdims=True)
    unit_b = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    dense_a, dense_b = linear_sum_assignment(unit_a @ unit_b.T, maximize=True)
    assert np.array_equal(sparse.a, dense_a) and np.array_equal(sparse.b, dense_b)
    assert "top-3 candidates" in sparse.describe()


def test_correlation_matching_equals_dense_pearson(base):
    import scipy.sparse as sp

    other = planted(seed=9)["acts"]
    matching = match_activations(sp.csr_array(base["acts"].T), sp.csr_array(other.T), k=LATENTS, block=100)
    pearson = np.corrcoef(base["acts"].T, other.T)[:LATENTS, LATENTS:]
    dense_a, dense_b = linear_sum_assignment(pearson, maximize=True)
    assert np.array_equal(matching.a, dense_a) and np.array_equal(matching.b, dense_b)
    assert np.allclose(matching.similarity, pearson[dense_a, dense_b], atol=1e-5)


def test_too_few_candidates_leave_latents_unmatched():
    rows, cols, sims = np.array([0, 1, 2]), np.array([0, 0, 1]), np.array([0.2, 0.9, 0.1])
    a, b, matched = assign(rows, cols, sims, 3, 2)
    assert sorted(zip(a.tolist(), b.tolist(), strict=True)) == [(1, 0), (2, 1)]
    assert np.allclose(sorted(matched), [0.1, 0.9])


def test_different_tokens_cannot_be_correlated(tmp_path, base, embed):
    a = make_run(tmp_path, "a", base)
    other = {**planted(seed=4), "decoder": None}
    b = make_run(tmp_path, "b", other, hookpoint="layers.2")
    with pytest.raises(UserError, match="different tokens"):
        run_compare([a, b], tmp_path / "out", embed=embed)


def test_bad_inputs_are_user_errors(tmp_path, base, embed):
    a = make_run(tmp_path, "a", base)
    with pytest.raises(UserError, match="at least two runs"):
        run_compare([a], embed=embed)
    with pytest.raises(UserError, match="neither a run directory nor a YAML config"):
        run_compare([a, tmp_path / "nope"], embed=embed)
    with pytest.raises(UserError, match="no cache"):
        run_compare([a, tmp_path], embed=embed)


def test_interpretability_compares_scores(tmp_path, base, perm, embed):
    rng = np.random.default_rng(2)
    detection = rng.uniform(0.5, 1.0, LATENTS)
    fuzzing = detection + rng.normal(0, 0.05, LATENTS)
    a = make_run(tmp_path, "a", base, scores={"detection": list(detection), "fuzzing": list(fuzzing)})
    b_scores = {"detection": list(detection[perm] - 0.1)}
    b = make_run(tmp_path, "b", permuted(base, perm), scores=b_scores)
    report = run_compare([a, b], tmp_path / "out", embed=embed)
    interp = report.interpretability
    means = {(row["scorer"], row["run"]): row["mean"] for row in interp.summaries}
    assert means[("detection", "a/layers.1")] == pytest.approx(detection.mean())
    assert means[("detection", "b/layers.1")] == pytest.approx(detection.mean() - 0.1)
    (test,) = interp.paired_tests
    assert test["pairing"] == "matched latents" and test["n"] == LATENTS
    assert test["mean_difference"] == pytest.approx(0.1) and test["p_value"] < 1e-6
    (agreement,) = interp.agreement
    assert agreement["run"] == "a/layers.1" and agreement["spearman"] > 0.8
    assert any("b/layers.1 has no fuzzing scores" in note for note in interp.notes)
    for name in ("scores.csv", "paired_tests.csv", "scorer_agreement.csv", "scores-detection.png"):
        assert (report.out_dir / name).is_file()
    with pytest.raises(UserError, match="no run has intruder scores"):
        run_compare([a, b], tmp_path / "out", scorers=["intruder"], embed=embed)


def test_runs_without_scores_say_so_in_the_summary(tmp_path, base, embed):
    a = make_run(tmp_path, "a", base)
    report = run_compare([a, a], embed=embed)
    assert report.out_dir == a / "compare"
    summary = (report.out_dir / "summary.md").read_text()
    assert "no run has scores" in summary
    assert json.loads((report.out_dir / "summary.json").read_text())["interpretability"]["scores"] == []


def test_cli_compares_a_config_and_a_run_dir(tmp_path, base, perm):
    config = make_run(tmp_path, "a", base, config=True) / "config.yaml"
    b = make_run(tmp_path, "b", permuted(base, perm))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["compare", str(config), str(b), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "decoder" in result.output and "1.000" in result.output
    expected = [
        "summary.md", "summary.json", "runs.csv", "pairs.csv", "similarity_matrix.csv", "matches-0-1.csv",
        "similarity_matrix.png", "explanation_similarity.png",
    ]  # fmt: skip
    assert all((out / name).is_file() for name in expected)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pairs"][0]["matching"].startswith("decoder cosine")
    assert summary["pairs"][0]["similarity"]["mean"] == pytest.approx(1.0, abs=1e-5)
    (out / "matches-0-3.csv").write_text("left by an earlier comparison of four runs")
    again = CliRunner().invoke(app, ["compare", str(config), str(b), "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert not (out / "matches-0-3.csv").exists() and all((out / name).is_file() for name in expected)
    foreign = tmp_path / "project"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    refused = CliRunner().invoke(app, ["compare", str(config), str(b), "--out", str(foreign)])
    assert refused.exit_code == 2 and refused.output.startswith("error: --out"), refused.output
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_cli_bad_input_is_a_one_line_error(tmp_path, base):
    a = make_run(tmp_path, "a", base)
    result = CliRunner().invoke(app, ["compare", str(a), str(tmp_path / "missing")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "missing" in lines[0]


def sampled_coder(num_latents: int, seed: int) -> dict:
    """A coder of `num_latents` random decoder directions, sparse activations and one text per latent."""
    rng = np.random.default_rng(seed)
    acts = np.where(rng.random((SEQUENCES * CTX_LEN, num_latents)) < 0.05, 1.0, 0.0).astype(np.float32)
    texts = [f"{EXPLANATIONS[i % LATENTS]} ({i})" for i in range(num_latents)]
    decoder = rng.normal(size=(num_latents, WIDTH)).astype(np.float32)
    return {"tokens": planted()["tokens"], "acts": acts, "decoder": decoder, "explanations": texts}


def test_few_pairs_explained_on_both_sides_are_flagged_and_partners_written(tmp_path, embed):
    """Samples of 100 of 4096 latents share ~2.4 matched pairs: a warning, and partner files for the rest."""
    num, sample = 4096, 100
    samples = [
        sorted(np.random.default_rng(seed).choice(num, sample, replace=False).tolist()) for seed in (1, 2)
    ]
    scores = {"detection": list(np.linspace(0.5, 1.0, sample))}
    a = make_run(tmp_path, "a", sampled_coder(num, 1), explained=samples[0], scores=scores)
    b = make_run(tmp_path, "b", sampled_coder(num, 2), explained=samples[1], scores=scores)
    result = CliRunner().invoke(app, ["compare", str(a), str(b), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    (pair,) = summary["pairs"]
    explained_pairs = pair["similarity"]["n"]
    assert explained_pairs < 30 and "fewer than 30" in pair["warning"]
    assert any("fewer than 30" in note and "explanation similarity" in note for note in summary["notes"])
    (test,) = summary["interpretability"]["paired_tests"]
    assert test["n"] < 30 and "Wilcoxon" in test["warning"]
    assert any("Wilcoxon" in note for note in summary["notes"])
    assert "fewer than 30" in (tmp_path / "out" / "summary.md").read_text()
    assert "fewer than 30" in " ".join(result.output.split())
    # every matched explained latent of one run has its partner listed for the other
    matches = np.loadtxt(tmp_path / "out" / "matches-0-1.csv", delimiter=",", skiprows=1, usecols=(0, 1))
    partner_of = dict(zip(matches[:, 0].astype(int), matches[:, 1].astype(int), strict=True))
    expected_b = {partner_of[latent] for latent in samples[0] if latent in partner_of} | set(samples[1])
    listed_b = read_latent_file(tmp_path / "out" / "partners-b.txt")
    assert listed_b == {HOOKPOINT: sorted(expected_b)}
    assert pair["explained_pairs_with_partners"] > 150 > explained_pairs
    assert summary["partners"][1]["not_explained"] == len(expected_b) - sample
    assert any("partners-b.txt" in command for command in summary["next_commands"])
    assert "next: explain the matched partners" in result.output


def test_latent_similarity_needs_no_explanations(tmp_path, base, perm, embed):
    """A coder against its own permuted copy: mean similarity 1; a random coder: at the null baseline."""
    a = make_run(tmp_path, "a", base)
    b = make_run(tmp_path, "b", permuted(base, perm))
    r = make_run(tmp_path, "r", {**planted(seed=5), "tokens": base["tokens"]})
    make_run(tmp_path, "a", {**permuted(base, perm), "decoder": None}, hookpoint="layers.2")
    shuffled = {**planted(seed=6), "tokens": base["tokens"], "decoder": None}
    make_run(tmp_path, "a", shuffled, hookpoint="layers.3")
    for run in (a, b, r):
        shutil.rmtree(run / "explanations")
    report = run_compare([a, b, r, a], tmp_path / "out", embed=embed)
    by_pair = {(p.a.label, p.b.label): p for p in report.pairs}
    same = by_pair[("a/layers.1", "b/layers.1")].latents
    assert same.method == "decoder cosine" and same.summary["n"] == LATENTS
    assert same.summary["mean"] == pytest.approx(1.0, abs=1e-5)
    assert same.summary["ci_low"] == pytest.approx(1.0, abs=1e-5)
    identity = by_pair[("a/layers.1", "a/layers.1#2")].latents
    assert identity.summary["mean"] == 1.0 and identity.summary["n"] == LATENTS
    for key in (
        ("a/layers.1", "a/layers.2"),
        ("a/layers.2", "b/layers.1"),
    ):  # the null leaves the runs as they were
        correlated = by_pair[key].latents
        assert correlated.method == "activation correlation"
        assert correlated.summary["mean"] == pytest.approx(1.0, abs=1e-5)
    for key, method in (
        (("a/layers.1", "r/layers.1"), "decoder cosine"),
        (("a/layers.1", "a/layers.3"), "activation correlation"),
    ):
        unrelated = by_pair[key].latents
        assert unrelated.method == method
        summary, baseline = unrelated.summary, unrelated.baseline_summary
        assert summary["ci_low"] < summary["mean"] < summary["ci_high"]
        assert abs(summary["mean"] - baseline["mean"]) < 0.1 and same.summary["mean"] > baseline["mean"] + 0.4
        assert by_pair[key].similarity.summary["n"] == 0
    out = report.out_dir
    labels = [run.label for run in report.runs]
    rows = (out / "latent_similarity_matrix.csv").read_text().splitlines()
    assert rows[0] == ",".join(["run", *labels]) and len(rows) == len(labels) + 1
    assert (out / "latent_similarity_matrix.png").stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    (written,) = [p for p in summary["pairs"] if (p["run_a"], p["run_b"]) == ("a/layers.1", "r/layers.1")]
    latents = written["latent_similarity"]
    assert latents["measure"] == "decoder cosine" and latents["ci_low"] is not None
    assert latents["mean"] == pytest.approx(by_pair[("a/layers.1", "r/layers.1")].latents.summary["mean"])
    assert latents["baseline"]["n"] > 0 and "random Gaussian" in latents["baseline_method"]
    matrix = np.array(summary["latent_similarity_matrix"]["values"], dtype=float)
    i, j = labels.index("a/layers.1"), labels.index("b/layers.1")
    assert (
        matrix.shape == (len(labels),) * 2
        and np.allclose(matrix, matrix.T)
        and matrix[i, j] == pytest.approx(1.0)
    )
    assert any("no explanations: compared by latent similarity only" in note for note in summary["notes"])
    assert "Latent similarity matrix" in (out / "summary.md").read_text()


def transcoder(directory: Path, seed: int) -> Path:
    """A sparsify TopK transcoder on `layers.0.mlp` of the tiny model, random weights from `seed`."""
    import torch
    from sparsify import SparseCoder, SparseCoderConfig

    torch.manual_seed(seed)
    coder = SparseCoder(HIDDEN, SparseCoderConfig(num_latents=96, k=6, transcode=True))
    with torch.no_grad():
        coder.encoder.bias.normal_(0, 0.1)
        coder.W_dec.normal_()
    coder.save_to_disk(directory / "layers.0.mlp")
    return directory


def test_explaining_the_partners_gives_matched_pairs_explained_on_both_sides(tmp_path, tiny_model_dir):
    """Two transcoders: cache, explain 12 of 96 latents each, compare, explain the partners, compare again."""
    sections = {
        "latents": {"sample": 12, "min_activations": 1},
        "examples": {"window": 8, "n_explain": 6, "n_test": 10, "n_negative": 10, "n_explain_negative": 3},
        "explainer": {"backend": "openai", "model": "stub-model", "base_url": "http://unused"},
        "scorers": ["embedding"],
        "controls": {"random_explanation": False},
    }
    configs = []
    for name, seed in (("a", 1), ("b", 2)):
        coders = transcoder(tmp_path / f"coders-{name}", seed)
        path = write_config(tmp_path / f"{name}.yaml", tiny_model_dir, coders, **sections)
        data = yaml.safe_load(path.read_text())
        data |= {"name": name, "out_dir": str(tmp_path / name), "seed": seed}
        data["sparse_coder"]["hookpoints"] = ["layers.0.mlp"]
        path.write_text(yaml.safe_dump(data))
        run_cache(load_config(path))
        configs.append(path)
    runner = CliRunner()
    out = tmp_path / "compare"
    with StubServer(lambda messages: f"[EXPLANATION]: spans {messages[-1]['content'].count('<<')}") as stub:
        url = f"explainer.base_url={stub.base_url}"
        for config in configs:
            assert runner.invoke(app, ["explain", str(config), "--set", url]).exit_code == 0
        first = runner.invoke(app, ["compare", *map(str, configs), "--out", str(out)])
        assert first.exit_code == 0, first.output
        (pair,) = json.loads((out / "summary.json").read_text())["pairs"]
        assert pair["method"] == "decoder cosine" and pair["similarity"]["n"] < 30
        assert "partners-a.txt" in first.output and "partners-b.txt" in first.output
        for name, config in zip("ab", configs, strict=True):
            partners = f"latents.indices_file={out / f'partners-{name}.txt'}"
            for stage in ("explain", "score"):
                result = runner.invoke(app, [stage, str(config), "--set", url, "--set", partners])
                assert result.exit_code == 0, result.output
    records = [read_records(tmp_path / name / "explanations", "layers.0.mlp") for name in "ab"]
    for name, by_latent in zip("ab", records, strict=True):
        (listed,) = read_latent_file(out / f"partners-{name}.txt").values()
        assert set(listed) <= set(by_latent), "every listed partner is explained (or skipped)"
    skipped = sum(1 for by_latent in records for r in by_latent.values() if r["skipped"])
    second = run_compare(configs, out, embed=lambda texts: np.eye(len(texts), 8, dtype=np.float32))
    (after,) = second.pairs
    assert len(after.similarity.values) >= pair["explained_pairs_with_partners"] - skipped
    assert len(after.similarity.values) >= 20 > pair["similarity"]["n"]
    scores = [read_records(tmp_path / name / "scores" / "embedding", "layers.0.mlp") for name in "ab"]
    unscored = sum(1 for by_latent in scores for r in by_latent.values() if r["score"] is None)
    (test,) = second.interpretability.paired_tests
    assert test["scorer"] == "embedding" and test["n"] >= len(after.similarity.values) - unscored


def test_explanation_similarity_is_also_given_for_closely_matched_pairs_only():
    """A matching pairs as many latents as it can, weak and negative matches included; the explanation
    similarity is also reported over the pairs matched at least 0, 0.5 and 0.8 alike."""
    from autointerp.compare.similarity import ExplanationVectors, explanation_similarity

    vectors = np.eye(4, dtype=np.float32)
    a = ExplanationVectors(np.arange(4), vectors)
    b = ExplanationVectors(np.arange(4), np.stack([vectors[0], vectors[1], vectors[3], vectors[2]]))
    latent_similarity = np.array([0.9, 0.6, -0.4, 0.1])
    result = explanation_similarity(np.arange(4), np.arange(4), a, b, 0, latent_similarity)
    by = result.by_latent_similarity
    assert by[">= 0.8"]["mean"] == pytest.approx(1.0) and by[">= 0.8"]["n"] == 1
    assert by[">= 0.5"]["n"] == 2 and by[">= 0"]["n"] == 3
    assert result.summary["n"] == 4 and result.summary["mean"] == pytest.approx(0.5)


def test_compare_refuses_a_foreign_out_folder_and_replaces_its_own(tmp_path):
    """`--out` pointing at a folder of other files is refused before any work (a comparison replaces its
    folder); a folder an earlier comparison wrote is replaced whole, so no old file stays beside new ones."""
    from autointerp.rundir import COMPARE_MARKER, require_compare_dir

    foreign = tmp_path / "project"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="did not write"):
        require_compare_dir(foreign)
    require_compare_dir(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    require_compare_dir(tmp_path / "empty")
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / COMPARE_MARKER).write_text("")
    (earlier / "matches-0-3.csv").write_text("old")
    require_compare_dir(earlier)
