"""A folder replaced whole: built beside its target, then renamed onto it."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from autointerp.errors import UserError


@contextmanager
def replacing(target: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `target`; when the block succeeds it becomes `target` (an
    existing `target` is moved aside, then removed). On failure `target` is left as it was."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    try:
        yield tmp
        if target.exists():
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except OSError:
            raise UserError(f"{target} was written by another process at the same time: rerun") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
