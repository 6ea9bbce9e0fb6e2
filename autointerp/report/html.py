"""HTML building blocks shared by the report pages: the page shell, cells, numbers, shaded tokens.

Every piece of run text (explanations are LLM output, tokens are corpus text) goes through `esc`.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Sequence
from pathlib import PurePosixPath
from urllib.parse import quote

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f3f3f3}
th.sort{cursor:pointer}
th[aria-sort=ascending]::after{content:" \\25B2"}
th[aria-sort=descending]::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.problem{color:#a40000}
.muted{color:#777}
.ex{font-family:monospace;white-space:pre-wrap;border:1px solid #e3e3e3;padding:3px 5px;margin:3px 0}
.ex.wrong{border:2px solid #d00}
.meta{font:12px system-ui,sans-serif;color:#555;margin-right:.6em}
.verdict-wrong{color:#d00;font-weight:bold}
.plots img{max-width:32%;min-width:300px;margin:4px;border:1px solid #eee}
"""


def esc(text: object) -> str:
    """Escape any value for HTML text and attribute values."""
    return html.escape(str(text), quote=True)


def page(title: str, body: str, script: str = "") -> str:
    """A complete, self-contained HTML page (inline CSS and optional inline script)."""
    script_tag = f"<script>\n{script}\n</script>\n" if script else ""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n"
        f"<body>\n{body}\n{script_tag}</body>\n</html>\n"
    )


def fmt(value: float | int | None, spec: str = ".3f") -> str:
    """A number for display; blank for missing."""
    if value is None:
        return ""
    return format(value, spec) if isinstance(value, float) else str(value)


def num_cell(value: float | int | None, spec: str = ".3f") -> str:
    """A right-aligned cell that sorts by its raw value (blank when missing)."""
    raw = "" if value is None else repr(value)
    return f'<td class="num" data-v="{esc(raw)}">{esc(fmt(value, spec))}</td>'


def table(headers: Sequence[str], rows: Sequence[str], attrs: str = "") -> str:
    """A table from plain-text headers and already rendered `<tr>` rows."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    return f"<table{attrs}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{''.join(rows)}</tbody>\n</table>"


def latent_path(hookpoint: str, latent: int) -> PurePosixPath:
    """Where a latent's page lives, relative to the report folder."""
    return PurePosixPath("latents") / hookpoint / f"{latent}.html"


def latent_href(hookpoint: str, latent: int) -> str:
    return quote(str(latent_path(hookpoint, latent)))


def shaded_tokens(pieces: Sequence[str], activations: Sequence[float], max_activation: float) -> str:
    """Tokens with a background whose strength is activation / the latent's max activation."""
    spans = []
    for piece, activation in zip(pieces, activations, strict=True):
        if activation > 0 and max_activation > 0:
            alpha = min(1.0, activation / max_activation)
            style = f"background:rgba(255,120,0,{alpha:.2f})"
            spans.append(f'<span style="{style}" title="{activation:.3g}">{_escaped(piece)}</span>')
        else:
            spans.append(_escaped(piece))
    return "".join(spans)


@functools.lru_cache(maxsize=1 << 16)
def _escaped(piece: str) -> str:
    """A token piece escaped once: pages repeat the same pieces thousands of times."""
    return esc(piece)
