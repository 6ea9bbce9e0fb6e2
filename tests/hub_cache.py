"""A local Hugging Face hub cache laid out as huggingface_hub lays it, for offline tests.

`<cache>/models--<org>--<repo>/refs/main` holds a commit hash and `snapshots/<hash>/<path>` the files
(huggingface_hub stores blobs and links them in; `hf_hub_download` reads plain files there alike).
"""

from __future__ import annotations

import shutil
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def snapshot_dir(cache: Path, repo_id: str) -> Path:
    """The snapshot folder of `repo_id` at `main`, created with its `refs/main`."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def put_folder(cache: Path, repo_id: str, subfolder: str, source: Path) -> Path:
    """Copy the coder folder `source` to `<subfolder>/` of `repo_id` in the cache."""
    target = snapshot_dir(cache, repo_id) / subfolder
    shutil.copytree(source, target, dirs_exist_ok=True)
    return target
