"""One latent's page: explanation, scores, explainer examples and each scorer's verdict per example."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from autointerp.errors import UserError
from autointerp.examples.compact import ExampleFiller, unpack
from autointerp.report.data import LatentRow
from autointerp.report.html import esc, fmt, latent_path, num_cell, page, shaded_tokens, table
from autointerp.report.tokens import Pieces


def render_latent(
    row: LatentRow, pieces: Pieces, note: str | None, filler: ExampleFiller | None = None
) -> str:
    """The latent's page; `note` is a warning shown at the top (e.g. the tokenizer fallback). `filler`
    puts back the examples' tokens and activations from the cache (records leave them out)."""
    up = "../" * (len(latent_path(row.hookpoint, row.latent).parts) - 1)
    title = f"{row.hookpoint} latent {row.latent}"
    explain = row.explain_record or {}
    shown = {k: _filled(row.latent, v, filler) for k, v in (explain.get("examples") or {}).items()}
    verdicts = {name: _filled(row.latent, r.get("examples"), filler) for name, r in row.score_records.items()}
    groups = [*shown.values(), *verdicts.values()]
    scale = _shading_scale(row, groups)
    unfilled = any(e.get("width") is not None and "tokens" not in e for group in groups for e in group)
    missing = f"the cache of {row.hookpoint} is missing or unfinished: examples are shown without their text"
    parts = [
        f'<p><a href="{up}index.html">&larr; all latents</a></p>',
        f"<h1>{esc(title)}</h1>",
        f'<p class="problem">{esc(note)}</p>' if note else "",
        f'<p class="problem">{esc(missing)}</p>' if unfilled else "",
        _overview(row),
        _answer(explain.get("answer")),
        "<h2>Scores</h2>",
        _scores(row),
        _examples("Activating examples shown to the explainer", shown.get("explain"), pieces, scale),
        _examples("Negatives shown to the explainer", shown.get("explain_negatives"), pieces, scale),
        *(_verdicts(name, examples, pieces, scale) for name, examples in verdicts.items()),
    ]
    return page(title, "\n".join(p for p in parts if p))


def _filled(latent: int, packed: Any, filler: ExampleFiller | None) -> list[dict[str, Any]]:
    """The examples whole; one whose fields have the wrong types (a hand-edited record) is kept as
    `{"malformed": why}` and shown as such, not rendered."""
    try:
        examples = unpack(packed)
    except (KeyError, TypeError, ValueError, AttributeError):
        return [{"malformed": "the examples of this record cannot be read"}]
    examples = [_checked(e) if isinstance(e, dict) else {"malformed": "not an object"} for e in examples]
    return [_refilled(latent, e, filler) for e in examples]


def _refilled(latent: int, example: dict[str, Any], filler: ExampleFiller | None) -> dict[str, Any]:
    """A packed window with its tokens and activations back (checked again), or why it cannot have them."""
    if filler is None or "malformed" in example or example.get("width") is None:
        return example
    try:
        return _checked(filler.fill(latent, [example])[0])
    except (TypeError, ValueError, IndexError, UserError) as exc:
        return {"malformed": f"its window is not in the cache ({type(exc).__name__})"}


def _checked(example: dict[str, Any]) -> dict[str, Any]:
    numbers = ("sequence", "start", "width", "quantile", "label", "prediction", "probability", "value")
    bad = [key for key in numbers if example.get(key) is not None and not _is_number(example[key])]
    tokens, activations = example.get("tokens", []), example.get("activations", [])
    if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
        bad.append("tokens")
    if not isinstance(activations, list) or not all(_is_number(a) for a in activations):
        bad.append("activations")
    elif len(activations) != len(tokens) and tokens:
        bad.append("activations (not one per token)")
    return {"malformed": "wrong " + ", ".join(bad)} if bad else example


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _overview(row: LatentRow) -> str:
    explanation = esc(row.explanation) if row.explanation is not None else '<span class="muted">none</span>'
    explain = row.explain_record or {}
    facts = [
        ("status", row.status),
        ("activations in the cache", explain.get("num_activations")),
        ("firing frequency", fmt(row.firing_frequency, ".3g")),
        ("max activation", fmt(row.max_activation, ".3g")),
        ("explainer", (explain.get("explainer") or {}).get("model")),
    ]
    items = "".join(f"<li>{esc(k)}: {esc(v)}</li>" for k, v in facts if v not in (None, ""))
    problems = "".join(f'<li class="problem">{esc(p)}</li>' for p in row.problems)
    return f'<p id="explanation"><b>Explanation:</b> {explanation}</p>\n<ul>{items}{problems}</ul>'


def _answer(answer: str | None) -> str:
    """The explainer's full answer (its reasoning), folded away."""
    if not answer:
        return ""
    return f'<details><summary>explainer answer</summary><div class="ex">{esc(answer)}</div></details>'


def _scores(row: LatentRow) -> str:
    if not row.score_records:
        return '<p class="muted">no scores yet</p>'
    rows = []
    for name, record in row.score_records.items():
        metrics = ", ".join(
            f"{k}={fmt(v)}" for k, v in (record.get("metrics") or {}).items() if v is not None
        )
        status = "; ".join(f"{k}: {record[k]}" for k in ("error", "skipped") if record.get(k))
        of = record.get("explanation_of")
        scored = record.get("explanation") or ""
        if of is not None and of != row.latent:
            scored = f"{scored} (explanation of latent {of})"
        rows.append(
            f"<tr><td>{esc(name)}</td>{num_cell(record.get('score'))}<td>{esc(metrics)}</td>"
            f'<td class="problem">{esc(status)}</td><td>{esc(scored)}</td></tr>\n'
        )
    return table(["scorer", "score", "metrics", "error / skipped", "explanation scored"], rows)


def _examples(heading: str, examples: list[dict[str, Any]] | None, pieces: Pieces, scale: float) -> str:
    if not examples:
        return ""
    body = "".join(_example(e, pieces, scale, _example_meta) for e in examples)
    return f"<h2>{esc(heading)} ({len(examples)})</h2>\n{body}"


def _verdicts(scorer: str, examples: list[dict[str, Any]], pieces: Pieces, scale: float) -> str:
    """A scorer's test examples, each with its label, the scorer's prediction and probability."""
    if not examples:
        return ""
    wrong = sum(_is_wrong(e) for e in examples)
    body = "".join(_example(e, pieces, scale, _verdict_meta, _is_wrong(e)) for e in examples)
    summary = f"{scorer}: {len(examples)} test examples, {wrong} wrong verdicts"
    heading = f"<h2>Scorer verdicts: {esc(scorer)}</h2>"
    return f"{heading}\n<details>\n<summary>{esc(summary)}</summary>\n{body}</details>"


def _is_wrong(example: dict[str, Any]) -> bool:
    prediction, label = example.get("prediction"), example.get("label")
    return "malformed" not in example and prediction is not None and label is not None and prediction != label


def _example_meta(example: dict[str, Any]) -> list[str]:
    activations = example.get("activations") or [0.0]
    meta = [f"seq {example.get('sequence')}:{example.get('start')}", f"max {max(activations):.3g}"]
    return meta + ([f"quantile {example['quantile']}"] if example.get("quantile") is not None else [])


def _verdict_meta(example: dict[str, Any]) -> list[str]:
    meta = [str(example.get("kind", "")), f"label {example.get('label')}"]
    prediction = example.get("prediction")
    meta.append("no prediction" if prediction is None else f"prediction {prediction}")
    for key in ("probability", "value"):
        if example.get(key) is not None:
            meta.append(f"{key} {fmt(float(example[key]))}")
    if example.get("error"):
        meta.append(f"error: {example['error']}")
    return meta + _example_meta(example)


def _example(
    example: dict[str, Any],
    pieces: Pieces,
    scale: float,
    meta: Callable[[dict[str, Any]], list[str]],
    wrong: bool = False,
) -> str:
    if "malformed" in example:
        return f'<div class="ex problem">malformed example: {esc(example["malformed"])}</div>\n'
    tokens = shaded_tokens(pieces(example.get("tokens", [])), example.get("activations", []), scale)
    labels = "".join(f'<span class="meta">{esc(m)}</span>' for m in meta(example))
    marker = '<span class="meta verdict-wrong">WRONG</span>' if wrong else ""
    return f'<div class="ex{" wrong" if wrong else ""}">{marker}{labels}<br>{tokens}</div>\n'


def _shading_scale(row: LatentRow, groups: list[list[dict[str, Any]]]) -> float:
    """The latent's max activation; else the largest activation among the examples shown."""
    if row.max_activation:
        return float(row.max_activation)
    peaks = (max(e.get("activations") or [0.0]) for group in groups for e in group if "malformed" not in e)
    return max(peaks, default=0.0)
