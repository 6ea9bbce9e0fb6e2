"""Write docs/presets.md from autointerp/presets.py (every preset value with its source)."""

from __future__ import annotations

from pathlib import Path

import benchlib  # noqa: F401 - puts the repository on sys.path

from autointerp.presets import presets_markdown


def main() -> None:
    path = Path(__file__).resolve().parents[1] / "docs" / "presets.md"
    path.write_text(presets_markdown())
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
