"""`autointerp report`: the HTML report of a synthetic run, checked as files and in headless Chromium."""

from __future__ import annotations

import html
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cache_factory import write_synthetic_cache
from conftest import write_config
from transformers import AutoTokenizer
from typer.testing import CliRunner

from autointerp.cache import CacheReader
from autointerp.cli import app
from autointerp.config import load_config
from autointerp.errors import UserError
from autointerp.report import write_report
from autointerp.report.data import LatentTable, choose_pages
from autointerp.report.index import READY_ATTRIBUTE
from autointerp.rundir import cache_dir, config_hash
from autointerp.score.plan import score_key
from autointerp.texts import TokenTexts

HP = "layers.1"
OTHER_HP = "layers.0.mlp"
SEQS, CTX, NUM_LATENTS = 8, 16, 10
EXPLANATION = 'Python <b>keywords</b> & "quotes"'
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _tokens(model_dir: Path) -> np.ndarray:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    text = "The for statement is used to iterate over the elements of a sequence. " * 40
    return np.array(tokenizer(text)["input_ids"][: SEQS * CTX], dtype=np.int32).reshape(SEQS, CTX)


def _example(tokens: np.ndarray, seq: int, peak: int | None, value: float = 4.0, **extra) -> dict:
    activations = [0.0] * 8
    if peak is not None:
        activations[peak] = value
        activations[peak + 1] = value / 2
    row = {"sequence": seq, "start": 0, "tokens": tokens[seq, :8].tolist(), "activations": activations}
    return row | {"quantile": 0 if peak is not None else None} | extra


def _explain_record(latent: int, hookpoint: str = HP, **fields) -> dict:
    return {
        "latent": latent,
        "hookpoint": hookpoint,
        "explanation": None,
        "error": None,
        "skipped": None,
        "num_activations": 4,
        "max_activation": 4.0,
        "explainer": {"model": "tiny-explainer"},
        "examples": {"explain": [], "explain_negatives": []},
    } | fields


def _score_record(scorer: str, latent: int, score: float | None, **fields) -> dict:
    control = "random_explanation" if scorer.endswith(".random_explanation") else None
    base = {"latent": latent, "hookpoint": HP, "scorer": scorer.split(".")[0], "control": control}
    return (
        base
        | {
            "explanation": "some explanation",
            "explanation_of": latent,
            "score": score,
            "metrics": {"balanced_accuracy": score, "auroc": None},
            "examples": [],
            "error": None,
            "skipped": None,
        }
        | fields
    )


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _make_run(root: Path, model_dir: Path) -> Path:
    """Config, cache for layers.1 only, explanations (explained, failed, skipped) and explanations only for
    layers.0.mlp."""
    run = root / "run"
    run.mkdir(parents=True)
    write_config(run / "config.yaml", model_dir, root / "coders", out_dir=str(run))
    tokens = _tokens(model_dir)
    planted = {
        3: [(2, 4.0), (3, 2.0), (CTX + 2, 3.0), (5 * CTX + 1, 1.0)],
        5: [(7, 1.5), (40, 0.5)],
        9: [(9, 1.0)],
    }
    write_synthetic_cache(cache_dir(run, HP), tokens, planted, NUM_LATENTS)
    explain = _explain_record(
        3,
        explanation=EXPLANATION,
        answer="Tokens <<for>> ... [EXPLANATION]: " + EXPLANATION,
        examples={"explain": [_example(tokens, 0, 2)], "explain_negatives": [_example(tokens, 4, None)]},
    )
    records = [
        explain,
        _explain_record(5, explanation="the word over"),
        _explain_record(7, error="unparseable answer: no [EXPLANATION] line"),
        _explain_record(9, skipped="too few activations (1 < 200)"),
    ]
    _write_jsonl(run / "explanations" / f"{HP}.jsonl", records)
    _write_jsonl(
        run / "explanations" / f"{OTHER_HP}.jsonl", [_explain_record(2, OTHER_HP, explanation="commas")]
    )
    return run


def _add_scores(run: Path, tokens: np.ndarray) -> None:
    verdicts = [
        _example(tokens, 0, 2, kind="activating", label=1, prediction=1, probability=0.91),
        _example(tokens, 6, None, kind="non_activating", label=0, prediction=1, probability=0.77),
    ]
    scores = {
        "detection": [
            _score_record("detection", 3, 0.9, explanation=EXPLANATION, examples=verdicts),
            _score_record("detection", 5, 0.6),
            _score_record("detection", 9, None, skipped="too few activations (1 < 200)"),
        ],
        "fuzzing": [_score_record("fuzzing", 3, 0.8), _score_record("fuzzing", 5, 0.4)],
        "detection.random_explanation": [
            _score_record("detection.random_explanation", 3, 0.5, explanation_of=5),
            _score_record("detection.random_explanation", 5, None, error="llm error: timeout"),
        ],
    }
    config = load_config(run / "config.yaml")
    reader = CacheReader(cache_dir(run, HP))
    for scorer, records in scores.items():
        name, _, control = scorer.partition(".")
        stamp = config_hash(score_key(config, reader, name, control or None))
        _write_jsonl(run / "scores" / scorer / f"{HP}.jsonl", [r | {"config_hash": stamp} for r in records])
    metric = {"mean": 0.75, "ci_low": 0.6, "ci_high": 0.9, "median": 0.75, "n": 2, "chance": 0.5}
    entry = {
        "headline": "balanced_accuracy",
        "selected": 4,
        "scored": 2,
        "skipped": 1,
        "failed": 0,
        "pending": 1,
    }
    summary = {"scorers": {"detection": {HP: entry | {"metrics": {"balanced_accuracy": metric}}}}}
    (run / "summary.json").write_text(json.dumps(summary))


@pytest.fixture(scope="module")
def full_report(tmp_path_factory, tiny_model_dir) -> Path:
    """index.html of a run with explanations, three scorer folders, a summary and a cache."""
    run = _make_run(tmp_path_factory.mktemp("report"), tiny_model_dir)
    _add_scores(run, _tokens(tiny_model_dir))
    return write_report(run)


def _rows(report: Path) -> list[list]:
    """The latent table's rows, read back from its data files."""
    rows = []
    for path in sorted((report / "rows").glob("rows-*.js")):
        text = path.read_text()
        rows += json.loads(text[text.index("= ") + 2 : text.rindex(";")])
    return rows


def test_index_lists_latents_scores_summary_and_plots(full_report):
    index = full_report.read_text()
    report = full_report.parent
    rows = _rows(report)
    assert [(r[0], r[1]) for r in rows] == [(HP, 3), (HP, 5), (HP, 7), (HP, 9), (OTHER_HP, 2)]
    by_latent = {(r[0], r[1]): r for r in rows}
    columns = json.loads(index.split('id="latents-meta">', 1)[1].split("</script>", 1)[0])["columns"]
    names = [c["name"] for c in columns]
    latent3 = dict(zip(names, by_latent[(HP, 3)], strict=False))
    assert latent3["explanation"] == EXPLANATION and EXPLANATION not in index  # text, set by the script
    assert latent3["detection"] == 0.9 and latent3["fuzzing"] == 0.8
    assert latent3["firing frequency"] == 0.03125  # latent 3 fires on 4 of 8 * 16 tokens
    problems = " ".join(r[names.index("errors")] for r in rows)
    for fragment in (
        "unparseable answer: no [EXPLANATION] line",
        "too few activations (1 < 200)",
        "detection.random_explanation: error: llm error: timeout",
    ):
        assert fragment in problems, fragment
    assert "0.750 [0.600, 0.900]" in index and "<script>" in index  # summary mean [CI]
    assert "http://" not in index and "https://" not in index
    for page in (f"latents/{HP}/3.html", f"latents/{HP}/7.html", f"latents/{OTHER_HP}/2.html"):
        assert (report / page).is_file() and page in [r[-1] for r in rows]
    plots = {p.name for p in (report / "plots").iterdir()}
    assert {"hist-detection.png", "freq-detection.png", "pair-detection-vs-fuzzing.png"} <= plots
    assert all((report / "plots" / name).read_bytes()[:4] == b"\x89PNG" for name in plots)
    assert all(f'src="plots/{name}"' in index for name in plots)


def test_latent_page_shades_tokens_and_marks_wrong_verdicts(full_report, tiny_model_dir):
    page = (full_report.parent / "latents" / HP / "3.html").read_text()
    texts = TokenTexts(AutoTokenizer.from_pretrained(tiny_model_dir))
    peak = texts.piece(_tokens(tiny_model_dir)[0, 2])
    assert f'style="background:rgba(255,120,0,1.00)" title="4">{html.escape(peak)}</span>' in page
    assert 'rgba(255,120,0,0.50)" title="2"' in page  # half the max activation, half the shade
    assert html.escape(EXPLANATION) in page and EXPLANATION not in page
    assert "Negatives shown to the explainer (1)" in page and "Tokens &lt;&lt;for&gt;&gt;" in page
    assert "2 test examples, 1 wrong verdicts" in page
    assert page.count("WRONG") == 1 and "probability 0.770" in page and "label 0" in page
    assert "explanation of latent 5" in page and 'href="../../index.html"' in page


def test_partial_run_without_scores_or_tokenizer(tmp_path, tiny_model_dir):
    run = _make_run(tmp_path, tiny_model_dir)
    write_config(run / "config.yaml", tmp_path / "no-model", tmp_path / "coders", out_dir=str(run))
    shutil.rmtree(cache_dir(run, HP))
    index = write_report(run).read_text()
    assert "no scores yet" in index and "could not be loaded" in index
    assert all(row[-4] is None for row in _rows(run / "report"))  # no cache: blank firing frequency
    page = (run / "report" / "latents" / HP / "3.html").read_text()
    first_token = _tokens(tiny_model_dir)[0, 0]
    assert f"[{first_token}]" in page


def test_rerun_replaces_the_old_report(tmp_path, tiny_model_dir):
    run = _make_run(tmp_path, tiny_model_dir)
    write_report(run)
    (run / "report" / "stale.html").write_text("old")
    index = write_report(run)
    assert index.is_file() and not (run / "report" / "stale.html").exists()
    assert [p.name for p in run.iterdir() if p.name.startswith(".report")] == []


def _invoke(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output.strip()


@pytest.mark.parametrize("case", ["missing dir", "no config", "nothing explained"])
def test_bad_run_dirs_give_one_line_errors(tmp_path, tiny_model_dir, case):
    run = tmp_path / "run"
    if case != "missing dir":
        run.mkdir()
    if case == "nothing explained":
        write_config(run / "config.yaml", tiny_model_dir, tmp_path / "coders", out_dir=str(run))
    code, output = _invoke("report", run)
    assert code == 2 and len(output.splitlines()) == 1 and output.startswith("error:"), output
    with pytest.raises(UserError):
        write_report(run)


def test_report_command_prints_the_index(tmp_path, tiny_model_dir):
    run = _make_run(tmp_path, tiny_model_dir)
    code, output = _invoke("report", run)
    assert code == 0 and "index.html" in output, output
    assert (run / "report" / "index.html").is_file()


def _chromium(*args: str) -> subprocess.CompletedProcess:
    browser = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)
    if browser is None:
        pytest.skip(
            f"no headless browser ({', '.join(BROWSERS)}) on PATH: install Debian's chromium (see .ci/run)"
        )
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--enable-logging=stderr",
        "--v=0",
    ]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=120, check=True)


def _console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def test_report_in_headless_chromium(full_report, tmp_path):
    profile = f"--user-data-dir={tmp_path / 'profile'}"
    screenshot = tmp_path / "index.png"
    shot = _chromium(profile, f"--screenshot={screenshot}", "--window-size=1280,900", full_report.as_uri())
    assert _console_messages(shot.stderr) == []
    assert screenshot.read_bytes()[:4] == b"\x89PNG" and screenshot.stat().st_size > 10_000

    index = _chromium(profile, "--dump-dom", full_report.as_uri())
    assert _console_messages(index.stderr) == []
    assert f'{READY_ATTRIBUTE}="yes"' in index.stdout  # the page script ran to the end
    shown = html.escape(EXPLANATION, quote=False)  # as the DOM serialises text
    assert shown in index.stdout and "commas" in index.stdout
    assert "5 of 5 latents" in index.stdout  # written by the filter script

    page = _chromium(profile, "--dump-dom", (full_report.parent / "latents" / HP / "3.html").as_uri())
    assert _console_messages(page.stderr) == []
    assert shown in page.stdout and "1 wrong verdicts" in page.stdout


def test_a_bounded_set_of_latent_pages(tmp_path, tiny_model_dir):
    run = _make_run(tmp_path, tiny_model_dir)
    _add_scores(run, _tokens(tiny_model_dir))
    index = write_report(run, max_pages=2)
    pages = sorted(p.name for p in (run / "report" / "latents").rglob("*.html"))
    linked = [r[1] for r in _rows(run / "report") if r[-1]]
    assert len(pages) == 2 and len(linked) == 2
    assert "2 latents have a page of their own" in index.read_text()


def test_pages_go_to_the_best_and_worst_latents_of_each_scorer():
    n = 10
    scores = {"a": np.arange(n, dtype=float), "b": np.full(n, np.nan)}
    scores["b"][[1, 4, 6]] = [0.5, 0.9, 0.1]
    table = LatentTable(
        hookpoints=[HP] * n,
        latents=np.arange(n),
        statuses=["explained"] * n,
        explanations=["x"] * n,
        scores=scores,
        firing_frequency=np.full(n, np.nan),
        max_activation=np.full(n, np.nan),
        problems={},
    )
    assert choose_pages(table, ["a", "b"], 4) == [0, 4, 6, 9]  # a: 9 best, 0 worst; b: 4 best, 6 worst
    assert choose_pages(table, ["a", "b"], 6) == [0, 1, 2, 4, 6, 9]  # one each as above, then the first rows
    assert choose_pages(table, ["a"], 20) == list(range(n))


def test_paged_index_loads_its_rows_on_demand_in_chromium(tmp_path, tiny_model_dir, monkeypatch):
    """Rows in data files of two rows each, pages of two rows: the first page shows without the others
    loaded; a filter (given in the address, #q=) loads every data file and finds the one match."""
    import autointerp.report.index as index_module

    monkeypatch.setattr(index_module, "CHUNK_ROWS", 2)
    monkeypatch.setattr(index_module, "PAGE_ROWS", 2)
    run = _make_run(tmp_path, tiny_model_dir)
    index = write_report(run)
    assert len(list((run / "report" / "rows").glob("rows-*.js"))) == 3
    profile = f"--user-data-dir={tmp_path / 'profile'}"
    first = _chromium(profile, "--dump-dom", "--virtual-time-budget=5000", index.as_uri())
    assert _console_messages(first.stderr) == [] and f'{READY_ATTRIBUTE}="yes"' in first.stdout
    assert "5 of 5 latents" in first.stdout and "page 1 of 3" in first.stdout
    assert "the word over" in first.stdout and "commas" not in first.stdout  # row 5 is on page 3
    found = _chromium(profile, "--dump-dom", "--virtual-time-budget=5000", index.as_uri() + "#q=commas")
    assert _console_messages(found.stderr) == [] and f'{READY_ATTRIBUTE}="yes"' in found.stdout
    assert "1 of 5 latents" in found.stdout and "commas" in found.stdout


def test_hand_edited_records_of_the_wrong_types_are_shown_as_malformed(tmp_path, tiny_model_dir):
    """A record whose fields have the wrong types (edited by hand, written by another tool) gives a report
    that says so, not a traceback."""
    run = _make_run(tmp_path, tiny_model_dir)
    tokens = _tokens(tiny_model_dir)
    bad = [_example(tokens, 0, 2) | {"activations": ["a"] * 8}, {"sequence": "x", "start": 0}]
    records = [
        _explain_record(3, explanation=["not", "text"], max_activation="big", examples={"explain": bad}),
        _explain_record(5, explanation="fine"),
    ]
    _write_jsonl(run / "explanations" / f"{HP}.jsonl", records)
    write_report(run)
    page = (run / "report" / "latents" / HP / "3.html").read_text()
    assert page.count("malformed example: wrong") == 2 and "activations" in page
    assert '["not", "text"]' in [r[3] for r in _rows(run / "report") if r[1] == 3][0]


def test_record_stamps_kept_as_arrays_answer_like_the_dict():
    from autointerp.report.data import _Stamps

    stamps = _Stamps({7: 1.5, 2: 3.0, 40: 2.0})
    every = stamps.all()
    assert [every.get(k) for k in (2, 7, 40, 5)] == [3.0, 1.5, 2.0, None]
    assert every.pop(7) == 1.5 and every.get(7) is None and stamps.all().get(7) == 1.5  # views apart
    some = stamps.of([40, 5, 2])
    assert [some.get(k) for k in (2, 7, 40)] == [3.0, None, 2.0]
    assert _Stamps({}).of([1]).get(1) is None
