"""A cache as one sparse [latents, tokens] matrix, and a digest of the tokens it was made on."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from safetensors import safe_open

from autointerp.cache import CacheReader
from autointerp.rundir import TOKENS_FILE

_CHUNK_BYTES = 1 << 20


def activation_matrix(reader: CacheReader) -> sp.csr_array:
    """Float32 CSR [num_latents, num_sequences * ctx_len], read shard by shard."""
    indptrs, indices, values = [np.zeros(1, dtype=np.int64)], [], []
    offset = 0
    for shard in sorted(reader.manifest["shards"], key=lambda s: s["start"]):
        with safe_open(str(reader.dir / shard["file"]), framework="pt") as f:
            indptr = f.get_tensor("indptr").long().numpy()
            indices.append(f.get_tensor("token_index").numpy())
            values.append(f.get_tensor("activation").float().numpy())
        indptrs.append(indptr[1:] + offset)
        offset += int(indptr[-1])
    shape = (reader.num_latents, reader.num_sequences * reader.ctx_len)
    return sp.csr_array(
        (np.concatenate(values), np.concatenate(indices), np.concatenate(indptrs)), shape=shape
    )


def tokens_digest(hookpoint_dir: Path) -> str:
    """SHA-256 of the cache's token file: equal digests mean the same tokens in the same order."""
    digest = hashlib.sha256()
    with open(hookpoint_dir / TOKENS_FILE, "rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
