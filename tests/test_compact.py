"""Packed examples in records: small on disk, nothing lost (tokens, activations and shown text come back
from the cache exactly), records of the older full layout still read."""

from __future__ import annotations

import json

import numpy as np
from cache_factory import write_synthetic_cache

from autointerp.examples.compact import ExampleFiller, pack, shown_text, unpack
from autointerp.examples.render import ShownExample, highlight, highlight_text, mark, plain
from autointerp.records import record_line

SEQS, CTX, WIDTH, LATENT = 400, 64, 32, 3


class Pieces:
    """A stand-in tokenizer text table: token t shows as ` t<t>`."""

    def pieces(self, tokens):
        return [f" t{int(t)}" for t in tokens]


def _cache(tmp_path):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 300, size=(SEQS, CTX), dtype=np.int32)
    planted = {
        LATENT: [
            (int(i), float(v))
            for i, v in zip(rng.choice(SEQS * CTX, 900, replace=False), rng.uniform(0.5, 5, 900), strict=True)
        ]
    }
    planted[LATENT].sort()
    return tokens, write_synthetic_cache(tmp_path / "cache", tokens, planted, 8)


def _window(reader, tokens, sequence, start):
    filler = ExampleFiller(reader)
    acts = filler.activations(LATENT, sequence, start, WIDTH)
    return {
        "sequence": sequence,
        "start": start,
        "tokens": tokens[sequence, start : start + WIDTH].tolist(),
        "activations": acts.tolist(),
        "quantile": int(sequence % 10),
    }


def _detection_examples(reader, tokens, rng):
    examples = []
    for i in range(200):
        window = _window(reader, tokens, int(rng.integers(SEQS)), int(rng.integers(CTX - WIDTH)))
        label = int(i < 100)
        highlighted = sorted(rng.choice(WIDTH, 2, replace=False).tolist()) if i % 3 == 0 else None
        examples.append(
            window
            | {
                "kind": "activating" if label else "non_activating",
                "label": label,
                "shown": shown_text(Pieces().pieces(window["tokens"]), highlighted),
                "highlighted": highlighted,
                "prediction": int(rng.integers(2)) if i != 7 else None,
                "probability": float(rng.uniform()) if i != 7 else None,
                "value": None,
                "error": None if i != 7 else "llm error: timeout",
            }
        )
    return examples


def test_a_scored_latent_of_200_examples_packs_under_8_kb_and_comes_back_whole(tmp_path):
    tokens, reader = _cache(tmp_path)
    original = _detection_examples(reader, tokens, np.random.default_rng(1))
    packed = record_line({"examples": pack(original)})
    assert len(packed) < 7000, len(packed)
    assert len(json.dumps(original)) > 10 * len(packed)
    back = ExampleFiller(reader, Pieces()).fill(LATENT, unpack(json.loads(packed)["examples"]))
    assert len(back) == len(original)
    for before, after in zip(original, back, strict=True):
        assert after.keys() - {"width"} == before.keys()
        for key, value in before.items():
            if isinstance(value, float):
                assert abs(after[key] - value) < 1e-6, key  # floats to 6 decimal places
            else:
                assert after[key] == value, key


def test_nested_excerpts_and_plain_columns_round_trip(tmp_path):
    tokens, reader = _cache(tmp_path)
    excerpts = [_window(reader, tokens, s, 4) | {"label": int(s == 2)} for s in range(5)]
    trials = [{"kind": "trial", "label": 2, "prediction": 2, "excerpts": excerpts}]
    steered = [
        {"kind": "steered", "prompt": "a", "value": 0.25},
        {"kind": "steered", "prompt": "b", "value": 1},
    ]
    assert unpack(pack(steered)) == steered
    (trial,) = ExampleFiller(reader).fill(LATENT, unpack(json.loads(json.dumps(pack(trials)))))
    assert trial["prediction"] == 2 and [e["tokens"] for e in trial["excerpts"]] == [
        e["tokens"] for e in excerpts
    ]
    assert [e["activations"] for e in trial["excerpts"]] == [e["activations"] for e in excerpts]


def test_records_of_the_full_layout_are_read_as_they_are():
    full = [{"sequence": 1, "start": 2, "tokens": [5, 6], "activations": [0.0, 1.0], "label": 1}]
    assert unpack(full) == full and unpack(None) == []
    assert ExampleFiller(reader=None).fill(0, full) == full  # type: ignore[arg-type]


def test_shown_text_is_what_the_scorers_render():
    pieces = [" a", " b", " c"]
    assert shown_text(pieces, None) == plain(pieces)
    mask = np.array([0, 1, 1], dtype=np.float32)
    assert shown_text(pieces, [1, 2]) == highlight(ShownExample(pieces, mask), 1.0, 0.0)[0] == "a<< b c>>"


def test_a_marked_mask_reads_as_the_same_activations_highlighted():
    """`mark`, the scorers' and the report's renderer of highlight masks, shows what `highlight` shows for
    activations positive exactly where the mask is set, corpus markup and marker bytes included; so does
    `highlight_text`, the explainer's renderer when no values are shown, for any threshold."""
    rng = np.random.default_rng(0)
    alphabet = [" a", "b", "<", ">", "<<", ">>", "\n", "[", "explanation", "]", "\x00", "\x01", "", " "]
    for _ in range(2000):
        pieces = [alphabet[i] for i in rng.integers(0, len(alphabet), int(rng.integers(0, 20)))]
        mask = rng.random(len(pieces)) < 0.4
        expected = highlight(ShownExample(pieces, mask.astype(np.float32)), 1.0, 0.0)[0]
        assert mark(pieces, mask) == expected, (pieces, mask)
        shown = ShownExample(pieces, (rng.random(len(pieces)) * mask).astype(np.float32))
        peak, threshold = float(shown.activations.max(initial=0.0)), float(rng.choice([0.0, 0.3, 0.7]))
        assert highlight_text(shown, peak, threshold) == highlight(shown, peak, threshold)[0]


def test_saebench_examples_are_refilled_in_saebenchs_rendering(tmp_path):
    """SAEBench shows newlines as ↵ and no highlight markers: its examples carry `shown_as` and come back
    with the text its scorer saw, not the default rendering."""
    from autointerp.saebench_protocol import SHOWN_AS, render

    tokens, reader = _cache(tmp_path)
    window = _window(reader, tokens, 5, 3)

    class Newlines(Pieces):
        def pieces(self, tokens):
            return [" x\n" if int(t) % 2 else " y" for t in tokens]

    shown = render(Newlines().pieces(window["tokens"]))
    example = window | {"label": 1, "shown": shown, "highlighted": None, "shown_as": SHOWN_AS}
    (back,) = ExampleFiller(reader, Newlines()).fill(LATENT, unpack(pack([example])))
    assert back["shown"] == shown and "↵" in shown
