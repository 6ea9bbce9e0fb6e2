"""The report's index page: run overview, summary table with CIs, plots, sortable filterable latent table."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

from autointerp.report.data import ReportData, SummaryRow
from autointerp.report.html import esc, fmt, latent_href, num_cell, page, table
from autointerp.report.plots import Plot

READY_ATTRIBUTE = "data-report-ready"
"""Set on <body> by the page script once it has run without throwing (checked by the browser test)."""

SCRIPT = """
(() => {
  const meta = JSON.parse(document.getElementById("latents-meta").textContent);
  const chunks = window.AUTOINTERP_ROWS;
  const table = document.getElementById("latents");
  const body = table.tBodies[0];
  const filter = document.getElementById("filter");
  const count = document.getElementById("count");
  const pager = document.getElementById("pager");
  const numeric = meta.columns.map((c) => c.type === "num");
  let page = 0, pages = 1, sortColumn = null, sortDir = 1, everything = null;
  const load = (i) => new Promise((resolve, reject) => {
    if (chunks[i]) return resolve();
    const script = document.createElement("script");
    script.src = `rows/${meta.prefix}${String(i).padStart(5, "0")}.js`;
    script.onload = () => resolve();
    script.onerror = () => reject(new Error(`could not load ${script.src}`));
    document.head.appendChild(script);
  });
  const loadAll = async () => {
    if (everything) return everything;
    for (let i = 0; i < meta.chunks; i++) {
      count.textContent = `loading latents ${i + 1} of ${meta.chunks} parts`;
      await load(i);
    }
    everything = [].concat(...Array.from({length: meta.chunks}, (_, i) => chunks[i]));
    return everything;
  };
  const compare = (a, b) => {
    const x = a[sortColumn], y = b[sortColumn];
    if (numeric[sortColumn]) {
      if (x === null || y === null) return (x === null) - (y === null);  // blanks last
      return (x - y) * sortDir;
    }
    const s = String(x ?? "").toLowerCase(), t = String(y ?? "").toLowerCase();
    return (s < t ? -1 : s > t ? 1 : 0) * sortDir;
  };
  const cell = (value, column) => {
    const td = document.createElement("td");
    if (column.type === "num") {
      td.className = "num";
      td.textContent = value === null ? "" : column.integer ? String(value) : Number(value).toPrecision(3);
    } else {
      td.textContent = value ?? "";
      if (column.name === "errors") td.className = "problem";
    }
    return td;
  };
  const render = (rows, matching) => {
    const first = page * meta.pageSize;
    body.replaceChildren(...rows.slice(first, first + meta.pageSize).map((row) => {
      const tr = document.createElement("tr");
      meta.columns.forEach((column, i) => tr.appendChild(cell(row[i], column)));
      const href = row[meta.columns.length];
      if (href) {
        const link = document.createElement("a");
        link.href = href;
        link.textContent = String(row[1]);
        tr.cells[1].replaceChildren(link);
      }
      return tr;
    }));
    pages = Math.max(1, Math.ceil(matching / meta.pageSize));
    count.textContent = `${matching} of ${meta.total} latents`;
    pager.textContent = `page ${page + 1} of ${pages}`;
  };
  const show = async () => {
    const query = filter.value.trim().toLowerCase();
    if (!query && sortColumn === null) {
      const chunk = Math.floor((page * meta.pageSize) / meta.chunkSize);
      await load(chunk);
      const offset = chunk * meta.chunkSize;
      const rows = new Array(offset).concat(chunks[chunk]);
      return render(rows, meta.total);
    }
    let rows = await loadAll();
    if (query) rows = rows.filter((row) => row.join("\\u0000").toLowerCase().includes(query));
    if (sortColumn !== null) rows = rows.slice().sort(compare);
    render(rows, rows.length);
  };
  Array.from(table.tHead.rows[0].cells).forEach((th, i) => {
    th.addEventListener("click", () => {
      sortDir = sortColumn === i ? -sortDir : 1;
      sortColumn = i;
      table.querySelectorAll("th[aria-sort]").forEach((h) => h.removeAttribute("aria-sort"));
      th.setAttribute("aria-sort", sortDir === 1 ? "ascending" : "descending");
      page = 0;
      show();
    });
  });
  if (location.hash.startsWith("#q=")) filter.value = decodeURIComponent(location.hash.slice(3));
  filter.addEventListener("input", () => { page = 0; show(); });
  document.getElementById("prev").addEventListener("click", () => { page = Math.max(0, page - 1); show(); });
  const next = () => { page = Math.min(page + 1, pages - 1); show(); };
  document.getElementById("next").addEventListener("click", next);
  show().then(() => document.body.setAttribute("__READY__", "yes"));
})();
""".replace("__READY__", READY_ATTRIBUTE)

CHUNK_ROWS = 5000
"""Latent rows per data file of the index (loaded when the page needs them)."""
PAGE_ROWS = 100
"""Latent rows shown at once."""
ROWS_PREFIX = "rows-"


def render_index(data: ReportData, plots: list[Plot], chunks: int, note: str | None) -> str:
    """The index page; `note` is a warning shown at the top (e.g. the tokenizer fallback)."""
    title = f"autointerp report: {data.config.name}"
    parts = [
        f"<h1>{esc(title)}</h1>",
        _overview(data),
        f'<p class="problem">{esc(note)}</p>' if note else "",
        "<h2>Summary</h2>",
        _summary(data.summary),
        "<h2>Plots</h2>",
        _plots(plots),
        "<h2>Latents</h2>",
        _latents(data, chunks),
    ]
    return page(title, "\n".join(p for p in parts if p), SCRIPT)


def _overview(data: ReportData) -> str:
    statuses = Counter(data.table.statuses)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
    hookpoints = ", ".join(dict.fromkeys(data.table.hookpoints))
    scorers = ", ".join(data.scorers) or "none yet"
    return (
        f"<p>Run <code>{esc(data.run_dir)}</code>; model <code>{esc(data.config.model.path)}</code>.<br>"
        f"{len(data.table)} latents ({esc(counts)}) on {esc(hookpoints)}; scorers: {esc(scorers)}.</p>"
    )


def _summary(rows: list[SummaryRow] | None) -> str:
    if not rows:
        return '<p class="muted">no scores yet</p>'
    headers = ["scorer", "hookpoint", "metric", "mean [95% CI]", "chance"]
    headers += ["selected", "scored", "skipped", "failed", "pending"]
    return table(headers, [_summary_row(row) for row in rows], ' id="summary"')


def _summary_row(row: SummaryRow) -> str:
    interval = f"{fmt(row.mean)} [{fmt(row.ci_low)}, {fmt(row.ci_high)}]" if row.mean is not None else ""
    counts = "".join(
        num_cell(v) for v in (row.chance, row.selected, row.scored, row.skipped, row.failed, row.pending)
    )
    return (
        f"<tr><td>{esc(row.scorer)}</td><td>{esc(row.hookpoint)}</td><td>{esc(row.metric)}</td>"
        f'<td class="num">{esc(interval)}</td>{counts}</tr>\n'
    )


def _plots(plots: list[Plot]) -> str:
    if not plots:
        return '<p class="muted">no scores yet, so no plots</p>'
    images = "".join(
        f'<img src="plots/{esc(p.file)}" alt="{esc(p.title)}" title="{esc(p.title)}">' for p in plots
    )
    return f'<div class="plots">{images}</div>'


def _latents(data: ReportData, chunks: int) -> str:
    columns = _columns(data.scorers)
    head = "".join(f'<th class="sort" data-type="{c["type"]}">{esc(c["name"])}</th>' for c in columns)
    meta = {
        "columns": columns,
        "total": len(data.table),
        "chunks": chunks,
        "chunkSize": CHUNK_ROWS,
        "pageSize": PAGE_ROWS,
        "prefix": ROWS_PREFIX,
    }
    pages = len(data.pages)
    note = (
        ""
        if pages == len(data.table)
        else (
            f' <span class="muted">({pages} latents have a page of their own: the best and worst of '
            "each scorer; `autointerp report --max-pages N` for more)</span>"
        )
    )
    return (
        f'<script type="application/json" id="latents-meta">{_json_in_html(meta)}</script>\n'
        '<p><input id="filter" type="search" placeholder="filter latents" size="40"> '
        '<span id="count" class="muted"></span> <span class="muted">(click a header to sort)</span>'
        f"{note}</p>\n"
        '<p><button id="prev">&larr; previous</button> <span id="pager" class="muted"></span> '
        '<button id="next">next &rarr;</button></p>\n'
        f'<table id="latents">\n<thead><tr>{head}</tr></thead>\n<tbody>\n</tbody>\n</table>\n'
        f"<script>window.AUTOINTERP_ROWS = {{}};</script>\n"
        f'<script src="rows/{ROWS_PREFIX}00000.js"></script>'
    )


def _columns(scorers: list[str]) -> list[dict[str, Any]]:
    columns: list[dict[str, Any]] = [
        {"name": "hookpoint", "type": "text"},
        {"name": "latent", "type": "num", "integer": True},
        {"name": "status", "type": "text"},
        {"name": "explanation", "type": "text"},
    ]
    columns += [{"name": scorer, "type": "num"} for scorer in scorers]
    return columns + [
        {"name": "firing frequency", "type": "num"},
        {"name": "max activation", "type": "num"},
        {"name": "errors", "type": "text"},
    ]


def write_rows(data: ReportData, directory: Path) -> int:
    """Write the latent table as data files of `CHUNK_ROWS` rows; returns how many."""
    directory.mkdir(parents=True, exist_ok=True)
    table = data.table
    paged = {(row.hookpoint, row.latent) for row in data.pages}
    chunks = max(1, -(-len(table) // CHUNK_ROWS))
    for chunk in range(chunks):
        rows = [
            _row(data, i, paged) for i in range(chunk * CHUNK_ROWS, min(len(table), (chunk + 1) * CHUNK_ROWS))
        ]
        text = f"window.AUTOINTERP_ROWS[{chunk}] = {json.dumps(rows, ensure_ascii=True)};\n"
        (directory / f"{ROWS_PREFIX}{chunk:05d}.js").write_text(text, encoding="utf-8")
    return chunks


def _row(data: ReportData, i: int, paged: set[tuple[str, int]]) -> list[Any]:
    table = data.table
    hookpoint, latent = table.hookpoints[i], int(table.latents[i])
    scores = [table.score(scorer, i) for scorer in data.scorers]
    href = latent_href(hookpoint, latent) if (hookpoint, latent) in paged else ""
    return [
        hookpoint,
        latent,
        table.statuses[i],
        table.explanations[i] or "",
        *scores,
        _number(table.firing_frequency[i]),
        _number(table.max_activation[i]),
        "; ".join(table.problems.get(i, [])),
        href,
    ]


def _number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _json_in_html(data: Any) -> str:
    """JSON safe inside a <script> element (no `</` can close it)."""
    return json.dumps(data, ensure_ascii=True).replace("</", "<\\/")
