"""Damaged record files: torn UTF-8 tails, bad lines in the middle, wrong shapes, two writers at once."""

from __future__ import annotations

import json
import logging

import pytest

from autointerp.errors import UserError
from autointerp.llm import LLMResponse, ResponseCache
from autointerp.records import RecordWriter, iter_records, read_records


def line(latent: int, text: str = "ok") -> bytes:
    return (json.dumps({"latent": latent, "explanation": text}) + "\n").encode()


def test_a_tail_torn_inside_a_utf8_character_is_skipped(tmp_path):
    path = tmp_path / "hp.jsonl"
    path.write_bytes(line(1) + b'{"latent": 2, "explanation": "\xe2\x80')
    assert set(read_records(tmp_path, "hp")) == {1}
    with RecordWriter(path) as writer:
        writer.write({"latent": 2, "explanation": "caf\u00e9 \u2192 ok"})
    assert read_records(tmp_path, "hp")[2]["explanation"] == "caf\u00e9 \u2192 ok"
    assert path.read_bytes().isascii()


def test_damaged_lines_in_the_middle_hide_nothing_after_them(tmp_path, caplog):
    path = tmp_path / "hp.jsonl"
    bad = [
        b"garbage\n",
        b"\n",
        b"[1, 2]\n",
        b'{"latent": "x"}\n',
        b'{"latent": -1}\n',
        b'{"latent": "\xff"}\n',
    ]
    path.write_bytes(line(1) + b"".join(bad) + line(2))
    with caplog.at_level(logging.WARNING, logger="autointerp.records"):
        assert set(read_records(tmp_path, "hp")) == {1, 2}
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "skipped 5 damaged line(s) (first: line 2)" in warnings[0]
    with RecordWriter(path) as writer:  # a latent redone after the damage is seen
        writer.write({"latent": 3})
    assert set(read_records(tmp_path, "hp")) == {1, 2, 3}
    assert [r["latent"] for r in iter_records(path)] == [1, 2, 3]


def test_a_second_writer_of_one_file_is_refused(tmp_path):
    path = tmp_path / "hp.jsonl"
    with RecordWriter(path) as writer:
        writer.write({"latent": 1})
        with pytest.raises(UserError, match="another autointerp process"):
            RecordWriter(path)
        writer.write({"latent": 2})
    with RecordWriter(path) as again:
        again.write({"latent": 3})
    assert [r["latent"] for r in iter_records(path)] == [1, 2, 3]


def test_a_second_writer_of_one_response_cache_shard_is_refused(tmp_path):
    first, second = ResponseCache(tmp_path, "whole"), ResponseCache(tmp_path, "whole")
    first.put("a", LLMResponse(text="x"))
    with pytest.raises(UserError, match="another autointerp process"):
        second.put("b", LLMResponse(text="y"))
    first.close()
    second.put("b", LLMResponse(text="y"))
    second.close()
    assert ResponseCache(tmp_path, "whole").get("a").text == "x"


def test_json_files_are_strict_json_and_csv_cells_never_formulas(tmp_path):
    """summary.json and the other JSON files hold null where a metric is NaN or infinite (strict parsers
    refuse NaN); an explanation that starts like a spreadsheet formula is written as text."""
    import json
    import math

    from autointerp.compare.tables import _csv_cell
    from autointerp.rundir import write_json_atomic

    write_json_atomic(tmp_path / "s.json", {"mean": math.nan, "ci": [math.inf, 0.5], "n": (1, -math.inf)})
    text = (tmp_path / "s.json").read_text()
    assert json.loads(text, parse_constant=lambda name: pytest.fail(name)) == {
        "mean": None,
        "ci": [None, 0.5],
        "n": [1, None],
    }
    for formula in ('=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tx"):
        assert _csv_cell(formula) == "'" + formula
    assert _csv_cell("dates and times") == "dates and times" and _csv_cell(-0.25) == "-0.25"
