"""Damaged record files: torn UTF-8 tails, bad lines in the middle, wrong shapes, two writers at once."""

from __future__ import annotations

import json
import logging

import pytest

from autointerp.errors import UserError
from autointerp.llm import LLMResponse, ResponseCache
from autointerp.records import (
    RecordWriter,
    iter_records,
    read_record_at,
    read_records,
    record_line,
    record_places,
)


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


def test_stamps_read_off_the_line_agree_with_the_parsed_record(tmp_path):
    """Which record is current is read from each line's `latent`, `written` and `config_hash` without
    parsing the rest; text that looks like those keys inside a string, lines of the older spaced layout and
    damaged lines give the same answer as parsing every line."""
    import json

    from autointerp.records import iter_latest, iter_stamps, latest_stamps

    with RecordWriter(tmp_path / "hp.jsonl") as writer:
        writer.write(
            {"latent": 1, "explanation": 'says "config_hash":"beef" and "written":1}', "config_hash": "aa"}
        )
        writer.write({"latent": 2, "explanation": "x", "config_hash": "bb"})
        writer.write({"latent": 1, "explanation": "retried", "config_hash": "aa"})
    with open(tmp_path / "hp.jsonl", "a") as f:
        f.write(json.dumps({"latent": 3, "config_hash": "aa", "written": 5.0}) + "\n")  # spaced layout
        f.write('{"latent":4,"config_hash":"aa",BROKEN,"written":6.0}\n')
    parsed = [(r["latent"], r["written"], r["config_hash"]) for r in iter_records(tmp_path / "hp.jsonl")]
    # a damaged line whose start and end are intact still counts as its latent's latest record: the
    # latent then has no readable current record (summary and report count it pending; a rerun redoes it)
    assert list(iter_stamps(tmp_path / "hp.jsonl")) == [*parsed, (4, 6.0, "aa")]
    stamps, other = latest_stamps(tmp_path, "hp", {"aa"})
    assert set(stamps) == {1, 3, 4} and other == 1
    records = list(iter_latest(tmp_path, "hp", stamps))
    assert [(r["latent"], r.get("explanation")) for r in records] == [(1, "retried"), (3, None)]


def test_resume_summary_and_report_agree_on_damaged_latest_lines_and_ties(tmp_path):
    """A latent whose latest line is damaged (start and end intact) has no current record for resume
    either: it is redone, not taken as done from its older record, as the summary and the report count it
    pending. Of two records with the same `written` stamp every reader takes the first in file order."""
    from autointerp.records import iter_latest, latest_stamps, read_records

    lines = [
        {"latent": 1, "explanation": "old", "config_hash": "aa", "written": 1.0},
        {"latent": 2, "explanation": "first", "config_hash": "aa", "written": 2.0},
        {"latent": 2, "explanation": "copy", "config_hash": "aa", "written": 2.0},
        {"latent": 3, "explanation": "kept", "config_hash": "aa", "written": 3.0},
    ]
    with open(tmp_path / "hp.jsonl", "w") as f:
        f.writelines(record_line(record) for record in lines)
        f.write('{"latent":1,"explanation":BROKEN,"config_hash":"aa","written":4.0}\n')
        f.write('{"latent":3,"explanation":BROKEN,"config_hash":"aa","written":0.5}\n')  # older: harmless
    resumed = read_records(tmp_path, "hp")
    stamps, _ = latest_stamps(tmp_path, "hp")
    streamed = {r["latent"]: r for r in iter_latest(tmp_path, "hp", dict(stamps))}
    assert sorted(resumed) == sorted(streamed) == [2, 3] and 1 in stamps
    assert resumed[2]["explanation"] == streamed[2]["explanation"] == "first"
    assert resumed[3]["explanation"] == streamed[3]["explanation"] == "kept"
    # the exports' index: where each of those records is, read back on demand
    placed = {
        latent: read_record_at(path, at) for latent, (path, at, _) in record_places(tmp_path, "hp").items()
    }
    assert placed == resumed


def test_an_export_map_reads_records_on_demand_and_refuses_a_changed_file(tmp_path):
    from autointerp.interop.rundata import RecordMap

    with RecordWriter(tmp_path / "hp.jsonl") as writer:
        for latent in (5, 2, 9, 2):
            writer.write({"latent": latent, "explanation": f"e{latent}", "config_hash": "aa"})
    seen = []
    places = record_places(tmp_path, "hp")
    records = RecordMap(places, lambda latent, record: seen.append(latent) or record)
    assert list(records) == [2, 5, 9] and len(records) == 3 and 5 in records and 7 not in records
    assert seen == []  # nothing read until looked up
    assert [r["explanation"] for r in records.values()] == ["e2", "e5", "e9"] and seen == [2, 5, 9]
    assert records[9] is records[9] and seen == [2, 5, 9]  # the last one looked up is kept
    assert records.get(7) is None

    def broken(latent, record):
        raise KeyError("start")  # a malformed packed window: not to pass for a missing latent

    with pytest.raises(UserError, match="latent 5 is malformed"):
        RecordMap(places, broken).get(5)
    with RecordWriter(tmp_path / "hp.jsonl") as writer:  # rewritten (--force) while an export reads it
        writer.write({"latent": 5, "explanation": "new", "config_hash": "bb"})
    (tmp_path / "hp.jsonl").write_bytes(b"")
    with RecordWriter(tmp_path / "hp.jsonl") as writer:
        for latent in (5, 2, 9, 2):
            writer.write({"latent": latent, "explanation": "new", "config_hash": "bb"})
    for latent in (2, 5):
        with pytest.raises(UserError, match="changed while it was read"):
            RecordMap(places, lambda latent, record: record)[latent]


def test_records_are_flushed_at_once_and_fsynced_in_batches(tmp_path, monkeypatch):
    """A record is in the file as soon as it is written (readable by another process: it survives a kill);
    fsync runs at most about once a second while records come quickly, and when the writer closes."""
    from autointerp import records as records_module

    synced = []
    monkeypatch.setattr(records_module.os, "fsync", lambda fd: synced.append(fd))
    monkeypatch.setattr(records_module, "SYNC_SECONDS", 3600.0)
    with RecordWriter(tmp_path / "hp.jsonl") as writer:
        for latent in range(200):
            writer.write({"latent": latent})
            assert len((tmp_path / "hp.jsonl").read_text().splitlines()) == latent + 1
        assert synced == []
    assert len(synced) == 1 and set(read_records(tmp_path, "hp")) == set(range(200))
    monkeypatch.setattr(records_module, "SYNC_SECONDS", 0.0)
    with RecordWriter(tmp_path / "other.jsonl") as writer:
        for latent in range(3):
            writer.write({"latent": latent})
    assert len(synced) == 1 + 3 + 1  # each write once the interval has passed, and on close
