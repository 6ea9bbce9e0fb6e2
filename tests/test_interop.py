"""Explanations made elsewhere scored by the real score stage, and exports read back by the libraries (or
checked against the schemas) of the tools they are for."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import re
import shutil
import zlib
from pathlib import Path

import pytest
import yaml
from conftest import write_config
from full_records import full_records
from openai_stub import StubServer
from typer.testing import CliRunner

from autointerp.cache import run_cache
from autointerp.cli import app
from autointerp.config import load_config
from autointerp.errors import UserError
from autointerp.explain import run_explain
from autointerp.interop.export import MARKER, run_export
from autointerp.interop.hookpoints import HookpointMapper, site
from autointerp.interop.imports import detect_format, import_explanations
from autointerp.score import run_score, write_summary

SECTIONS = {
    "latents": {"sample": 6, "min_activations": 20},
    "examples": {"window": 8, "n_explain": 4, "n_test": 4, "n_negative": 4, "n_explain_negative": 0},
    "explainer": {"backend": "openai", "model": "stub", "base_url": "http://unused", "max_concurrency": 4},
    "scorers": ["detection", "fuzzing"],
}
HOOKPOINTS = ("layers.1", "layers.0.mlp")
HP = "layers.0.mlp"
"""The hookpoint whose sampled latents fire often enough to be scored."""


def explanation_for(messages: list[dict]) -> str:
    return "[EXPLANATION]: tokens inside Python documentation"


def verdict(excerpt: str) -> str:
    """The stub scorer's fixed answer for an excerpt (a hash of its text)."""
    return str(zlib.crc32(excerpt.encode()) % 2)


def answers_by_hash(messages: list[dict]) -> str:
    excerpts = re.findall(r"Excerpt(?: \d+)?: (.*)", messages[1]["content"])
    answers = [verdict(text) for text in excerpts]
    return answers[0] if len(answers) == 1 else "[" + ", ".join(answers) + "]"


def stub_overrides(stub: StubServer) -> list[str]:
    return ["scorer.backend=openai", f"scorer.base_url={stub.base_url}", "scorer.model=stub"]


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory, tiny_model_dir, sparsify_coders_dir) -> Path:
    """A cached, explained and scored (detection, fuzzing) tiny run; its config path."""
    root = tmp_path_factory.mktemp("interop-run")
    config_path = write_config(root / "config.yaml", tiny_model_dir, sparsify_coders_dir, **SECTIONS)
    run_cache(load_config(config_path))
    with StubServer(explanation_for) as stub:
        run_explain(load_config(config_path, [f"explainer.base_url={stub.base_url}"]))
    with StubServer(answers_by_hash) as stub:
        config = load_config(config_path, stub_overrides(stub))
        run_score(config)
        write_summary(config, config.run_dir / "scores")
    return config_path


@pytest.fixture
def run(tmp_path, scored_run) -> Path:
    """A private copy of the scored run; its config path."""
    shutil.copytree(scored_run.parent / "run", tmp_path / "run", symlinks=True)
    data = yaml.safe_load(scored_run.read_text())
    data["out_dir"] = str(tmp_path / "run")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    return tmp_path / "config.yaml"


def own_explanations(config) -> dict[tuple[str, int], str]:
    return {
        (hp, latent): record["explanation"]
        for hp in HOOKPOINTS
        for latent, record in full_records(config.run_dir / "explanations", hp).items()
        if record["explanation"]
    }


def human_explanations(config) -> list[dict]:
    """Hand-written explanations for the latents the run explained, as Neuronpedia rows."""
    names = {"layers.0.mlp": "0-mlp-handmade", "layers.1": "1-res-jb"}
    return [
        {"modelId": "tiny", "layer": names[hp], "index": str(latent), "description": f"human text {latent}"}
        | {"typeName": "human", "authorId": "someone"}
        for (hp, latent) in sorted(own_explanations(config))
    ]


def write_gz_jsonl(path: Path, rows: list[dict]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cli(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


# --- import ---------------------------------------------------------------------------------------------


def test_neuronpedia_explanations_scored_like_the_tools_own(run, tmp_path):
    """Imported rows land in imports/<name>/ as explanation records with their source; the real score stage
    scores them on the same test examples as the run's own explanations; the summary says disjointness is
    unchecked; the run's own explanations and scores are untouched."""
    config = load_config(run)
    silent = {"modelId": "tiny", "layer": "1-res-jb", "index": "0", "description": "never fires"}
    rows = [*human_explanations(config), silent]
    path = write_gz_jsonl(tmp_path / "np-rows.jsonl.gz", rows)
    own_files = {p: p.read_bytes() for p in config.run_dir.rglob("*.jsonl")}
    with StubServer(answers_by_hash) as stub:
        sets = sum((["--set", o] for o in stub_overrides(stub)), [])
        result = cli("score", str(run), "--explanations", str(path), *sets, "--set", "scorers=[detection]")
    assert result.exit_code == 0, result.output
    assert "imported neuronpedia explanations" in result.output
    set_dir = config.run_dir / "imports" / "np-rows"
    assert all(p.read_bytes() == data for p, data in own_files.items()), "the run's own files changed"
    records = full_records(set_dir / "explanations", HP)
    expected = {int(r["index"]): r["description"] for r in rows if r["layer"].startswith("0-")}
    assert {latent: r["explanation"] for latent, r in records.items()} == expected
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    for record in records.values():
        assert record["source"]["format"] == "neuronpedia" and record["source"]["sha256"] == sha
        assert record["source"]["name"] == "0-mlp-handmade"
        assert record["source"]["fields"]["typeName"] == "human"
    never = full_records(set_dir / "scores" / "detection", "layers.1")[0]
    assert never["explanation"] == "never fires" and never["skipped"].startswith("too few activ")
    imported = full_records(set_dir / "scores" / "detection", HP)
    theirs = full_records(config.run_dir / "scores" / "detection", HP)
    assert set(imported) == set(expected)
    scored = [r for r in imported.values() if r["score"] is not None]
    assert scored, "some imported explanations must be scored"
    for latent, record in imported.items():
        assert record["explanation"] == expected[latent]
        windows = [(e["sequence"], e["start"], e["label"]) for e in record["examples"]]
        assert windows == [(e["sequence"], e["start"], e["label"]) for e in theirs[latent]["examples"]]
        assert [e["prediction"] for e in record["examples"]] == [
            int(verdict(e["shown"])) for e in record["examples"]
        ]
    summary = json.loads((set_dir / "summary.json").read_text())
    assert summary["explanations"]["imported"] is True
    assert summary["explanations"]["disjointness_checked"] is False
    assert summary["scorers"]["detection"][HP]["scored"] == len(scored)
    assert "cannot be checked" in (set_dir / "summary.md").read_text()
    assert "explanations" not in json.loads((config.run_dir / "summary.json").read_text())
    assert (set_dir / "cache").resolve() == (config.run_dir / "cache").resolve()
    assert cli("report", str(set_dir)).exit_code == 0, "an imported set is a run directory like any other"
    compared = cli("compare", str(config.run_dir), str(set_dir), "--out", str(tmp_path / "cmp"))
    assert compared.exit_code == 0, compared.output
    assert rows[0]["layer"].startswith("0-")
    rows[0]["description"] = "a changed explanation"
    write_gz_jsonl(path, rows)
    with StubServer(answers_by_hash) as stub:
        again = import_explanations(config, path)
        overrides = [*stub_overrides(stub), "scorers=[detection]"]
        report = run_score(load_config(again.config.run_dir / "config.yaml", overrides))
    tally = report.tallies[("detection", HP)]
    assert tally.scored + tally.failed + tally.skipped == 1, "only the changed explanation is scored again"
    assert tally.already_done == len(expected) - 1


def _table_csv(config, folder: Path) -> Path:
    path = folder / "human.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["hookpoint", "latent", "explanation"])
        for (hp, latent), text in sorted(own_explanations(config).items()):
            writer.writerow([hp, latent, text])
    return path


def _table_jsonl(config, folder: Path) -> Path:
    path = folder / "human.jsonl"
    items = sorted(own_explanations(config).items())
    rows = [{"layer": hp, "feature": latent, "label": text} for (hp, latent), text in items]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _own_jsonl(config, folder: Path) -> Path:
    path = folder / "own.jsonl"
    lines = [(config.run_dir / "explanations" / f"{hp}.jsonl").read_text() for hp in HOOKPOINTS]
    path.write_text("".join(lines))
    return path


def _exported(fmt: str):
    def make(config, folder: Path) -> Path:
        return run_export(config.run_dir, fmt, folder / fmt)

    return make


@pytest.mark.parametrize(
    ("fmt", "make"),
    [
        ("autointerp", _own_jsonl),
        ("table", _table_csv),
        ("table", _table_jsonl),
        ("delphi", _exported("delphi")),
        ("neuronpedia", _exported("neuronpedia")),
    ],
)
def test_every_format_is_detected_and_imports_the_same_explanations(run, tmp_path, fmt, make):
    """The run's own explanations written in each format (delphi's and Neuronpedia's by our exporters)
    come back as the same (hookpoint, latent, explanation) triples."""
    config = load_config(run)
    path = make(config, tmp_path)
    assert detect_format(path) == fmt
    result = import_explanations(config, path, name="again")
    assert result.format == fmt
    imported = {
        (hp, latent): r["explanation"]
        for hp in HOOKPOINTS
        for latent, r in full_records(result.config.run_dir / "explanations", hp).items()
    }
    assert imported == own_explanations(config)
    assert result.config.latents.indices == tuple(sorted({latent for _, latent in imported}))
    assert result.warnings == []


def test_records_from_another_cache_are_imported_with_a_warning(run, tmp_path):
    config = load_config(run)
    path = _own_jsonl(config, tmp_path)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        record["config_key"]["cache"] = "0123456789abcdef"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = import_explanations(config, tmp_path / "own.jsonl")
    assert len(result.warnings) == len(result.counts) >= 1
    assert "made on another cache (0123456789abcdef" in result.warnings[0]


def test_import_errors_are_one_line_and_write_nothing(run, tmp_path):
    config = load_config(run)
    rows = [{"layer": "7-res-jb", "index": "3", "description": "x", "modelId": "m"}]
    path = write_gz_jsonl(tmp_path / "far.jsonl.gz", rows)
    result = cli("score", str(run), "--explanations", str(path))
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "error:" in result.output
    assert "'7-res-jb' does not map" in result.output and "--map-hookpoint 7-res-jb=" in result.output
    assert not (config.run_dir / "imports").exists()
    mapped = import_explanations(config, path, mapping={"7-res-jb": "layers.1"})
    written = mapped.config.run_dir / "explanations" / "layers.1.jsonl"
    assert full_records(written.parent, "layers.1")[3]["explanation"] == "x"
    stamp = written.stat().st_mtime_ns
    import_explanations(config, path, mapping={"7-res-jb": "layers.1"})
    assert written.stat().st_mtime_ns == stamp, "the same import again rewrites nothing"
    twice = write_gz_jsonl(tmp_path / "twice.jsonl.gz", rows + rows)
    with pytest.raises(UserError, match="latent 3 of layers.1 is explained twice .line 1 and line 2"):
        import_explanations(config, twice, mapping={"7-res-jb": "layers.1"})
    outside = write_gz_jsonl(tmp_path / "outside.jsonl.gz", [rows[0] | {"layer": "1-res-x", "index": "96"}])
    with pytest.raises(UserError, match="latent 96 is out of range: layers.1 has 96 latents"):
        import_explanations(config, outside)
    assert not (config.run_dir / "imports" / "outside").exists(), "checked before anything is written"
    odd = tmp_path / "odd.jsonl"
    odd.write_text(json.dumps({"foo": 1}) + "\n")
    with pytest.raises(UserError, match="pass --explanations-format"):
        import_explanations(config, odd)
    assert not (config.run_dir / "imports" / "twice").exists()


def test_hookpoint_names_map_by_layer_and_kind():
    assert site("blocks.6.hook_resid_post") == (6, "res") == site("blocks.7.hook_resid_pre")
    assert site("blocks.0.hook_resid_pre") is None, "the embedding output is no layer's output"
    assert site("blocks.3.hook_mlp_out") == (3, "mlp") == site("model.layers.3.mlp") == site("3-mlp-x")
    assert site("h.2.attn") == (2, "attn") == site("2-att-kk") == site("blocks.2.hook_attn_out")
    assert site("20-gemmascope-res-16k") == (20, "res")
    assert site("5-transcoder-hp") is None and site("embed_tokens") is None
    mapper = HookpointMapper(["layers.6", "layers.6.mlp"], {"odd": "layers.6"})
    assert mapper.map("6-res-jb") == "layers.6" and mapper.map("blocks.6.hook_mlp_out") == "layers.6.mlp"
    assert mapper.map("odd") == "layers.6" and mapper.map(None) is None
    assert mapper.map("layers.7") is None
    assert HookpointMapper(["layers.6"]).map(None) == "layers.6"
    with pytest.raises(UserError, match="not a hookpoint of this config"):
        HookpointMapper(["layers.6"], {"a": "layers.9"})


# --- export ---------------------------------------------------------------------------------------------

NEURONPEDIA_FIELDS = {
    # utils/neuronpedia-utils/neuronpedia_utils/db_models/*.py and apps/webapp/prisma/schema.prisma @ebb8426f
    "features": {
        "required": {"modelId", "layer", "index"},
        "allowed": {"creatorId", "createdAt", "maxActApprox", "hasVector", "vector", "vectorLabel"}
        | {"vectorDefaultSteerStrength", "hookName", "topkCosSimIndices", "topkCosSimValues", "frac_nonzero"}
        | {"neg_str", "neg_values", "pos_str", "pos_values", "sourceSetName"},
    },
    "activations": {
        "required": {"id", "tokens", "index", "layer", "modelId", "maxValue", "maxValueTokenIndex"}
        | {"minValue", "values", "creatorId"},
        "allowed": {"dataSource", "dataIndex", "dfaValues", "createdAt", "binMin", "binMax", "binContains"},
    },
    "explanations": {
        "required": {"id", "modelId", "layer", "index", "description", "authorId"},
        "allowed": {"embedding", "triggeredById", "typeName", "explanationModelName", "notes", "createdAt"},
    },
    "explanation_scores": {
        "required": {"id", "initiatedByUserId", "value", "explanationId", "explanationScoreTypeName"}
        | {"explanationScoreModelName"},
        "allowed": {"jsonDetails", "createdAt"},
    },
}


def read_batches(folder: Path) -> list[dict]:
    files = sorted(folder.glob("batch-*.jsonl.gz"))
    assert files and all(re.fullmatch(r"batch-\d+\.jsonl\.gz", f.name) for f in files)
    return [json.loads(line) for f in files for line in gzip.open(f, "rt").read().splitlines()]


def test_neuronpedia_export_has_the_columns_neuronpedia_imports(run, tmp_path):
    config = load_config(run)
    result = cli("export", str(config.run_dir), "--format", "neuronpedia", "--out", str(tmp_path / "np"))
    assert result.exit_code == 0, result.output
    model_id = Path(config.model.path).name.lower()
    source = tmp_path / "np" / model_id / "0-mlp-autointerp"
    assert (tmp_path / "np" / model_id / "1-res-autointerp").is_dir()
    tables = {name: read_batches(source / name) for name in NEURONPEDIA_FIELDS}
    for name, rows in tables.items():
        fields = NEURONPEDIA_FIELDS[name]
        for row in rows:
            assert fields["required"] <= set(row) <= fields["required"] | fields["allowed"], name
    explanations = {e["id"]: e for e in tables["explanations"]}
    own = own_explanations(config)
    assert {int(e["index"]): e["description"] for e in explanations.values()} == {
        latent: text for (hp, latent), text in own.items() if hp == HP
    }
    assert all(
        e["layer"] == "0-mlp-autointerp" and isinstance(e["index"], str) for e in explanations.values()
    )
    scores = full_records(config.run_dir / "scores" / "detection", HP)
    detection = [
        s for s in tables["explanation_scores"] if s["explanationScoreTypeName"] == "autointerp_detection"
    ]
    assert detection and len(detection) == sum(1 for r in scores.values() if r["score"] is not None)
    for score in detection:
        explanation = explanations[score["explanationId"]]
        assert score["value"] == scores[int(explanation["index"])]["score"]
        items = json.loads(score["jsonDetails"])
        assert {"text", "distance", "ground_truth", "prediction", "correct", "str_tokens"} <= set(items[0])
    for activation in tables["activations"]:
        assert len(activation["tokens"]) == len(activation["values"])
        assert activation["maxValue"] == activation["values"][activation["maxValueTokenIndex"]] > 0
    lookups = {
        p.stem: [json.loads(x) for x in p.read_text().splitlines()]
        for p in (tmp_path / "np" / "config").iterdir()
    }
    assert {row["name"] for row in lookups["explanation_score_type"]} == {
        "autointerp_detection",
        "autointerp_fuzzing",
    }
    assert {s["explanationScoreModelName"] for s in detection} <= {
        r["name"] for r in lookups["explanation_score_model"]
    }


def test_hf_export_loads_with_datasets(run, tmp_path):
    """`datasets` loads both Parquet folders, and the card's configs by name; values are the records'."""
    import datasets

    config = load_config(run)
    out = run_export(config.run_dir, "hf", tmp_path / "hf")
    explanations = datasets.load_dataset("parquet", data_dir=str(out / "explanations"), split="train")
    examples = datasets.load_dataset("parquet", data_dir=str(out / "examples"), split="train")
    by_card = datasets.load_dataset(str(out), "examples", split="train")
    assert by_card.num_rows == examples.num_rows
    detection = full_records(config.run_dir / "scores" / "detection", HP)
    rows = {(r["hookpoint"], r["latent"]): r for r in explanations}
    assert {key: r["explanation"] for key, r in rows.items() if r["explanation"]} == own_explanations(config)
    for latent, record in detection.items():
        row = rows[(HP, latent)]
        assert row["detection_score"] == record["score"]
        assert row["detection_f1"] == record["metrics"]["f1"]
        assert (
            row["fuzzing_score"] == full_records(config.run_dir / "scores" / "fuzzing", HP)[latent]["score"]
        )
    mine = [e for e in examples if e["scorer"] == "detection" and e["hookpoint"] == HP]
    assert len(mine) == sum(len(r["examples"]) for r in detection.values())
    sample = next(e for e in mine if e["latent"] == min(detection))
    first = detection[min(detection)]["examples"][sample["example"]]
    assert sample["tokens"] == first["tokens"] and sample["text"] == first["shown"]
    assert sample["label"] == first["label"] and sample["prediction"] == first["prediction"]
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert [c["config_name"] for c in front["configs"]] == ["explanations", "examples"]
    assert (out / "config.yaml").is_file() and (out / "summary.json").is_file()


def test_delphi_export_is_read_by_delphis_analysis(run, tmp_path):
    """delphi's own `load_data` and `get_agg_metrics` read the export; its pooled balanced accuracy is the
    one computed from our records."""
    analysis = pytest.importorskip("delphi.log.result_analysis")
    config = load_config(run)
    out = run_export(config.run_dir, "delphi", tmp_path / "delphi")
    # one module at a time: delphi's frequency-weighted F1 indexes its firing counts with a pandas slice
    # of its frame, which breaks for every module after the first
    frame, counts = analysis.load_data(out / "scores", [HP])
    assert counts is not None and set(counts) == set(HOOKPOINTS)
    metrics = analysis.get_agg_metrics(frame, counts).set_index("score_type")
    for ours, theirs in (("detection", "detection"), ("fuzzing", "fuzz")):
        examples = [
            e
            for r in full_records(config.run_dir / "scores" / ours, HP).values()
            if r["explanation"]
            for e in r["examples"]
            if e["prediction"] is not None
        ]
        positives = [e for e in examples if e["label"] == 1]
        negatives = [e for e in examples if e["label"] == 0]
        tpr = sum(e["prediction"] == 1 for e in positives) / len(positives)
        tnr = sum(e["prediction"] == 0 for e in negatives) / len(negatives)
        assert metrics.loc[theirs, "accuracy"] == pytest.approx((tpr + tnr) / 2)
        assert metrics.loc[theirs, "total_examples"] == len(examples)
    explanation = json.loads(next((out / "explanations").glob(f"{HP}_latent*.txt")).read_text())
    assert explanation == "tokens inside Python documentation"
    run_config = json.loads((out / "run_config.json").read_text())
    assert run_config["constructor_cfg"]["min_examples"] == 20


def saebench_answer(messages: list[dict]) -> str:
    """The stub's answers in SAEBench's formats: an explanation, or the indices of sequences it picks."""
    if "comma-separated list" not in messages[0]["content"]:
        return "This neuron activates on tokens inside Python documentation."
    count = len(re.findall(r"^\d+\. ", messages[1]["content"], flags=re.M))
    return ", ".join(str(i) for i in range(1, count + 1) if zlib.crc32(f"{i}{messages[1]}".encode()) % 3 == 0)


def _saebench_run(run: Path, tmp_path: Path) -> Path:
    """The tiny run explained and scored through the pipeline with `preset: saebench`; only the cache keys
    stay the tiny run's (so its cache is reused)."""
    raw = yaml.safe_load(run.read_text())
    for key in ("examples", "scorers", "latents"):
        raw.pop(key, None)
    raw["preset"] = "saebench"
    run.write_text(yaml.safe_dump(raw))
    with StubServer(saebench_answer) as stub:
        config = load_config(run, [f"explainer.base_url={stub.base_url}", *stub_overrides(stub)])
        assert config.examples.explain_sampling == "top_iw" and config.scorers == ("saebench",)
        run_explain(config, force=True)
        run_score(config, force=True)
    return config.run_dir


def test_saebench_export_matches_saebenchs_schema(run, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    eval_output = pytest.importorskip("sae_bench.evals.autointerp.eval_output")
    run_dir = _saebench_run(run, tmp_path)
    out = run_export(run_dir, "saebench", tmp_path / "sb")
    (path,) = out.glob("*_eval_results.json")
    assert path.name == f"autointerp-tiny_{HP}_eval_results.json"
    data = json.loads(path.read_text())
    schema = json.loads(
        (Path(eval_output.__file__).parent / "eval_output_schema_autointerp.json").read_text()
    )
    jsonschema.validate(data, schema)
    parsed = eval_output.AutoInterpEvalOutput(**data)
    assert parsed.eval_config.n_ex_for_scoring == 14 and parsed.eval_config.n_ex_for_generation == 15
    records = {
        str(latent): r
        for latent, r in full_records(run_dir / "scores" / "saebench", HP).items()
        if r["score"] is not None
    }
    assert records and set(data["eval_result_unstructured"]) == set(records)
    for latent, result in data["eval_result_unstructured"].items():
        examples = records[latent]["examples"]
        assert len(examples) == 14 and sum(e["label"] for e in examples) == 4
        assert result["score"] == pytest.approx(records[latent]["score"])
        assert result["correct seqs"] == [i for i, e in enumerate(examples, start=1) if e["label"] == 1]
    mean = sum(r["score"] for r in records.values()) / len(records)
    assert data["eval_result_metrics"]["autointerp"]["autointerp_score"] == pytest.approx(mean)
    raw = yaml.safe_load((run_dir / "config.yaml").read_text())
    raw["sparse_coder"] |= {"path": "saelens:my-release/layer_0/width_96", "hookpoints": [HP]}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(raw))
    (named,) = run_export(run_dir, "saebench", tmp_path / "sb").glob("*_eval_results.json")
    assert named.name == "my-release_layer_0_width_96_eval_results.json"
    data = json.loads(named.read_text())
    assert (data["sae_lens_release_id"], data["sae_lens_id"]) == ("my-release", "layer_0/width_96")


def test_saebench_export_refuses_another_protocol_and_keeps_the_old_export(run, tmp_path):
    config = load_config(run)
    first = run_export(config.run_dir, "delphi", tmp_path / "out")
    before = sorted(p.relative_to(first) for p in first.rglob("*"))
    result = cli("export", str(config.run_dir), "--format", "saebench", "--out", str(first))
    assert result.exit_code == 2 and result.output.count("\n") == 1
    for key in (
        "examples.explain_sampling",
        "n_explain is 4",
        "n_negative is 4",
        "explainer.kind",
        "scorers",
    ):
        assert key in result.output
    assert sorted(p.relative_to(first) for p in first.rglob("*")) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary folder is left"
    assert (first / MARKER).is_file()


def test_export_replaces_only_its_own_folders(run, tmp_path):
    config = load_config(run)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    result = cli("export", str(config.run_dir), "--format", "hf", "--out", str(tmp_path / "mine"))
    assert result.exit_code == 2 and "is not an earlier export" in result.output
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    default = run_export(config.run_dir, "hf")
    assert default == config.run_dir / "export" / "hf"
    (default / "stray.txt").write_text("from the first export")
    assert run_export(config.run_dir, "hf") == default and not (default / "stray.txt").exists()


def test_imported_set_exports_with_its_provenance(run, tmp_path):
    config = load_config(run)
    path = write_gz_jsonl(tmp_path / "np.jsonl.gz", human_explanations(config))
    result = import_explanations(config, path)
    out = run_export(result.config.run_dir, "hf", tmp_path / "hf")
    card = (out / "README.md").read_text()
    assert "imported from a neuronpedia file" in card and "could not be checked" in card
