"""The report's index page: run overview, summary table with CIs, plots, sortable filterable latent table."""

from __future__ import annotations

from collections import Counter

from autointerp.report.data import LatentRow, ReportData, SummaryRow
from autointerp.report.html import esc, fmt, latent_href, num_cell, page, table
from autointerp.report.plots import Plot

READY_ATTRIBUTE = "data-report-ready"
"""Set on <body> by the page script once it has run without throwing (checked by the browser test)."""

SCRIPT = """
(() => {
  const table = document.getElementById("latents");
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  const filter = document.getElementById("filter");
  const count = document.getElementById("count");
  const key = (row, i, numeric) => {
    const cell = row.cells[i];
    const raw = cell.hasAttribute("data-v") ? cell.getAttribute("data-v") : cell.textContent;
    return numeric ? (raw === "" ? NaN : parseFloat(raw)) : raw.toLowerCase();
  };
  const compare = (x, y, numeric, dir) => {
    if (numeric && (isNaN(x) || isNaN(y))) return isNaN(x) - isNaN(y);  // blanks last
    return (x < y ? -1 : x > y ? 1 : 0) * dir;
  };
  Array.from(table.tHead.rows[0].cells).forEach((th, i) => {
    th.addEventListener("click", () => {
      const numeric = th.dataset.type === "num";
      const dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
      table.querySelectorAll("th[aria-sort]").forEach((h) => h.removeAttribute("aria-sort"));
      rows.sort((a, b) => compare(key(a, i, numeric), key(b, i, numeric), numeric, dir));
      rows.forEach((row) => body.appendChild(row));
      th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    });
  });
  const applyFilter = () => {
    const query = filter.value.trim().toLowerCase();
    let shown = 0;
    rows.forEach((row) => {
      row.hidden = !row.textContent.toLowerCase().includes(query);
      shown += row.hidden ? 0 : 1;
    });
    count.textContent = `${shown} of ${rows.length} latents`;
  };
  filter.addEventListener("input", applyFilter);
  applyFilter();
  document.body.setAttribute("__READY__", "yes");
})();
""".replace("__READY__", READY_ATTRIBUTE)


def render_index(data: ReportData, plots: list[Plot], note: str | None) -> str:
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
        _latents(data),
    ]
    return page(title, "\n".join(p for p in parts if p), SCRIPT)


def _overview(data: ReportData) -> str:
    statuses = Counter(row.status for row in data.latents)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
    hookpoints = ", ".join(dict.fromkeys(row.hookpoint for row in data.latents))
    scorers = ", ".join(data.scorers) or "none yet"
    return (
        f"<p>Run <code>{esc(data.run_dir)}</code>; model <code>{esc(data.config.model.path)}</code>.<br>"
        f"{len(data.latents)} latents ({esc(counts)}) on {esc(hookpoints)}; scorers: {esc(scorers)}.</p>"
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


def _latents(data: ReportData) -> str:
    columns = [("hookpoint", "text"), ("latent", "num"), ("status", "text"), ("explanation", "text")]
    columns += [(scorer, "num") for scorer in data.scorers]
    columns += [("firing frequency", "num"), ("max activation", "num"), ("errors", "text")]
    head = "".join(f'<th class="sort" data-type="{kind}">{esc(name)}</th>' for name, kind in columns)
    rows = "".join(_latent_row(row, data.scorers) for row in data.latents)
    return (
        '<p><input id="filter" type="search" placeholder="filter latents" size="40"> '
        '<span id="count" class="muted"></span> <span class="muted">(click a header to sort)</span></p>\n'
        f'<table id="latents">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}</tbody>\n</table>'
    )


def _latent_row(row: LatentRow, scorers: list[str]) -> str:
    link = f'<a href="{esc(latent_href(row.hookpoint, row.latent))}">{row.latent}</a>'
    scores = "".join(num_cell(row.scores.get(scorer)) for scorer in scorers)
    problems = "<br>".join(esc(p) for p in row.problems)
    return (
        f'<tr><td>{esc(row.hookpoint)}</td><td class="num" data-v="{row.latent}">{link}</td>'
        f"<td>{esc(row.status)}</td><td>{esc(row.explanation or '')}</td>{scores}"
        f"{num_cell(row.firing_frequency, '.3g')}{num_cell(row.max_activation, '.3g')}"
        f'<td class="problem">{problems}</td></tr>\n'
    )
