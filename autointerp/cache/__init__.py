"""Stage 1: the sparse activation cache (writer, reader, statistics)."""

from autointerp.cache.reader import CacheReader, LatentActivations
from autointerp.cache.stage import CacheReport, run_cache

__all__ = ["CacheReader", "CacheReport", "LatentActivations", "run_cache"]
