"""Latent list files (`latents.indices_file`): latent indices, optionally one `[hookpoint]` section each.

    # comments and blank lines are ignored
    [layers.5.mlp]
    3, 17, 40:44
    [layers.6.mlp]
    8

A file without sections applies to every hookpoint. In a file with sections a hookpoint gets only its
own section (which may be empty), and a hookpoint without one is an error. Lines hold indices and
`start:end` ranges separated by commas or spaces.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from autointerp.errors import ConfigError

KEY = "latents.indices_file"
ALL_HOOKPOINTS = ""
"""Section of the latents listed outside any `[hookpoint]` section."""


def read_latent_file(path: str | Path) -> dict[str, list[int]]:
    """Hookpoint (or ALL_HOOKPOINTS) -> sorted unique latents; one ConfigError for a missing or bad file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(KEY, f"{str(path)!r} is not a file: pass a text file of latent indices")
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(KEY, f"{path} cannot be read as text ({exc})") from None
    sections: dict[str, set[int]] = {}
    current: str | None = None
    for number, raw in enumerate(lines, start=1):
        line = raw.partition("#")[0].strip()
        if not line:
            continue
        if line.startswith("["):
            current = _section_name(path, number, line)
            sections.setdefault(current, set())
            continue
        if current is None and any(name != ALL_HOOKPOINTS for name in sections):
            raise ConfigError(KEY, f"{path} line {number}: latents before the first [hookpoint] section")
        if current is None:
            current = ALL_HOOKPOINTS
        sections.setdefault(current, set()).update(_latents(path, number, line))
    if ALL_HOOKPOINTS in sections and len(sections) > 1:
        raise ConfigError(KEY, f"{path}: latents outside sections and [hookpoint] sections: use one form")
    return {name: sorted(latents) for name, latents in sections.items()}


def latents_for(sections: dict[str, list[int]], hookpoint: str, path: str | Path) -> list[int]:
    """The latents a read file gives `hookpoint`."""
    if ALL_HOOKPOINTS in sections:
        return sections[ALL_HOOKPOINTS]
    if hookpoint not in sections:
        listed = ", ".join(sorted(sections)) or "none"
        raise ConfigError(
            KEY, f"{path} has no [{hookpoint}] section (it lists {listed}): pass the file made for this run"
        )
    return sections[hookpoint]


def format_latent_file(sections: Mapping[str, Iterable[int]], header: Iterable[str] = ()) -> str:
    """A latent file: `# header` lines, then one `[hookpoint]` section each (sorted, 20 latents a line)."""
    lines = [f"# {line}" for line in header]
    for hookpoint, latents in sections.items():
        ordered = sorted(set(latents))
        lines.append(f"[{hookpoint}]")
        lines += [", ".join(map(str, ordered[i : i + 20])) for i in range(0, len(ordered), 20)]
    return "\n".join(lines) + "\n"


def _section_name(path: Path, number: int, line: str) -> str:
    name = line[1:-1].strip() if line.endswith("]") else ""
    if not name:
        raise ConfigError(KEY, f"{path} line {number}: {line!r} is not a [hookpoint] section header")
    return name


def _latents(path: Path, number: int, line: str) -> list[int]:
    latents: list[int] = []
    for part in line.replace(",", " ").split():
        start, sep, end = part.partition(":")
        if not start.isdigit() or (sep and not end.isdigit()):
            raise ConfigError(
                KEY, f'{path} line {number}: {part!r} is not a latent index or a range like "40:44"'
            )
        latents.extend(range(int(start), int(end)) if sep else [int(start)])
    return latents
