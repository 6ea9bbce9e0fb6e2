"""A calibration's result on disk: `calibration.json`, `calibration.md` and the `calibration.html` page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from autointerp.report.html import esc, num_cell, page, table
from autointerp.rundir import write_text_atomic

JSON_FILE = "calibration.json"
MD_FILE = "calibration.md"
HTML_FILE = "calibration.html"
CONDITION_LABELS = {
    "true": "true explanations",
    "shuffled": "shuffled true explanations",
    "explainer": "explainer's explanations",
    "explainer_noise": "explainer on noise latents",
}
NOTE = (
    "Planted latents are linear probes for token classes with a known true explanation. Each scorer scores "
    "the probes with their true explanations and with another probe's true explanation (shuffled: a seeded "
    "derangement); a scorer that works scores the true ones higher. The separation is the mean over probes "
    "of true minus shuffled, with a paired bootstrap 95% CI and a one-sided sign-flip p-value; it is "
    "significant when the CI lies above 0 and p < 0.05. Noise latents (random directions) have no meaning: "
    "explanations of them should score at chance."
)


def write_outputs(directory: Path, result: dict[str, Any]) -> None:
    """Write the three files (each atomically)."""
    write_text_atomic(directory / JSON_FILE, json.dumps(result, indent=2) + "\n")
    write_text_atomic(directory / MD_FILE, markdown(result))
    write_text_atomic(directory / HTML_FILE, html_page(result))


def scorer_rows(result: dict[str, Any]) -> list[dict[str, str]]:
    """One display row per scorer: metric, chance, each condition's mean [CI], separation, verdict."""
    rows = []
    for scorer, r in result["scorers"].items():
        row = {"scorer": scorer, "metric": r["metric"], "chance": _num(r["chance"])}
        for name, label in CONDITION_LABELS.items():
            row[label] = _mean_ci(r["conditions"][name])
        row["true - shuffled"] = _difference(r["separation"])
        separation = r["separation"] or {}
        row["significant"] = (
            "-" if separation.get("mean") is None else "yes" if separation["significant"] else "no"
        )
        row["verdict"] = r["verdict"]
        rows.append(row)
    return rows


def auroc_rows(result: dict[str, Any]) -> list[dict[str, str]]:
    """AUROC per condition for the scorers whose headline is another metric (detection, fuzzing)."""
    rows = []
    for scorer, r in result["scorers"].items():
        if "auroc" in r:
            cells = {label: _mean_ci(r["auroc"][name]) for name, label in CONDITION_LABELS.items()}
            rows.append({"scorer": scorer, "metric": "auroc", "chance": "0.500", **cells})
    return rows


def probe_rows(result: dict[str, Any]) -> list[dict[str, str]]:
    """One display row per planted latent: what it is, fitted and held-out precision / recall."""
    fit = {e["latent"]: e for e in result["planted"]["latents"]}
    rows = []
    for held in result["heldout"]:
        entry = fit[held["latent"]]
        if held["kind"] == "probe":
            quality = (
                f"{_num(entry['fit']['precision'])} / {_num(entry['fit']['recall'])}",
                f"{_num(held['precision'])} / {_num(held['recall'])}",
                f"{held['tokens']:,}",
            )
        else:
            quality = (
                f"fires on {entry['fit']['firing_rate']:.2%}",
                f"fires on {held['firing_rate']:.2%}",
                "",
            )
        rows.append(
            {
                "latent": str(held["latent"]),
                "planted": held["class"] or "noise (random direction)",
                "fit precision / recall": quality[0],
                "held-out precision / recall": quality[1],
                "held-out class tokens": quality[2],
                "true explanation": entry.get("explanation", ""),
            }
        )
    return rows


def markdown(result: dict[str, Any]) -> str:
    lines = ["# Calibration: can the scorers tell a true explanation from a wrong one?", ""]
    lines += [f"- {line}" for line in result["headline"]]
    lines += ["", "## Scorers", "", _md_table(scorer_rows(result)), "", NOTE, ""]
    if auroc_rows(result):
        lines += ["AUROC of the scorer's P(yes), where it has one:", "", _md_table(auroc_rows(result)), ""]
    lines += ["## Explainer", "", _similarity_text(result["explainer_similarity"]), ""]
    lines += ["## Planted latents", "", _md_table(probe_rows(result)), ""]
    lines += [_planted_text(result), ""]
    return "\n".join(lines)


def html_page(result: dict[str, Any]) -> str:
    parts = ["<h1>Calibration: can the scorers tell a true explanation from a wrong one?</h1>"]
    parts.append("<ul>" + "".join(f"<li>{esc(line)}</li>" for line in result["headline"]) + "</ul>")
    parts += ["<h2>Scorers</h2>", _html_table(scorer_rows(result)), f'<p class="muted">{esc(NOTE)}</p>']
    if auroc_rows(result):
        parts += ["<p>AUROC of the scorer's P(yes), where it has one:</p>", _html_table(auroc_rows(result))]
    parts += ["<h2>Explainer</h2>", f"<p>{esc(_similarity_text(result['explainer_similarity']))}</p>"]
    pairs = result["explainer_similarity"].get("pairs") or []
    if pairs:
        rows = [
            f"<tr><td>{esc(p['class'])}</td><td>{esc(p['truth'])}</td><td>{esc(p['explanation'])}</td>"
            f"{num_cell(p['cosine'])}</tr>\n"
            for p in pairs
        ]
        parts.append(table(["class", "true explanation", "explainer's explanation", "cosine"], rows))
    parts += [
        "<h2>Planted latents</h2>",
        _html_table(probe_rows(result)),
        f"<p>{esc(_planted_text(result))}</p>",
    ]
    links = " · ".join(
        f'<a href="{esc(run)}/report/index.html">{esc(run)} run report</a>' for run in result["runs"]
    )
    parts.append(f"<p>{links}</p>")
    return page("autointerp calibration", "\n".join(parts))


def _html_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "<p>none</p>"
    cells = []
    for row in rows:
        verdict_class = ' class="problem"' if "NOT" in row.get("verdict", "") else ""
        tds = "".join(
            f"<td{verdict_class if key == 'verdict' else ''}>{esc(value)}</td>" for key, value in row.items()
        )
        cells.append(f"<tr>{tds}</tr>\n")
    return table(list(rows[0]), cells)


def _md_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "none"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row[h].replace("|", "\\|") for h in header) + " |" for row in rows]
    return "\n".join(lines)


def _similarity_text(s: dict[str, Any]) -> str:
    if "matched" not in s:
        note = s.get("note", "not measured")
        return f"Explainer vs truth: {note} ({s['n_explained']} of {s['n_probes']} probes explained)."
    return (
        f"Embedding cosine between the explainer's explanation of a probe and its true explanation: "
        f"{_mean_ci(s['matched'])}, against {_mean_ci(s['random_pairs'])} for random pairs (the explanation "
        f"and another probe's truth); permutation p = {s['p_value']:.3g}. The nearest true explanation is "
        f"the right one for {s['top1_accuracy']:.0%} of the {s['n_explained']} explained probes (chance "
        f"{s['top1_chance']:.0%}); embedding model {s['model']}."
    )


def _planted_text(result: dict[str, Any]) -> str:
    planted = result["planted"]
    text = (
        f"Probes fitted on the first {planted['fit_sequences']:,} cached sequences "
        f"({planted['fit_tokens']:,} tokens) at {planted['hookpoint']}, checked on the other cached "
        "sequences."
    )
    if planted["dropped"]:
        dropped = ", ".join(f"{d['class']} ({d['fit_tokens']} fitting tokens)" for d in planted["dropped"])
        text += f" Not planted, too rare in the fitting tokens: {dropped}."
    return text


def _mean_ci(stats: dict[str, Any] | None) -> str:
    if not stats or stats.get("mean") is None:
        return "-"
    ci = f" [{stats['ci_low']:.3f}, {stats['ci_high']:.3f}]" if stats.get("ci_low") is not None else ""
    return f"{stats['mean']:.3f}{ci} (n={stats['n']})"


def _difference(d: dict[str, Any] | None) -> str:
    if not d or d.get("mean") is None:
        return "-"
    ci = f" [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]" if d.get("ci_low") is not None else ""
    return f"{d['mean']:+.3f}{ci}, p={d['p_value']:.3g}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
