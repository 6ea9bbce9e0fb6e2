"""Embedding scoring: is the explanation closer to activating excerpts than to non-activating ones?

The explanation is embedded as a query and each excerpt as a document; the score is the AUROC of their
cosine similarity, activating vs non-activating. No LLM is involved.
"""

from __future__ import annotations

from autointerp.embedding import Embedder
from autointerp.score.base import Outcome
from autointerp.score.items import ScoredExample
from autointerp.score.metrics import auroc


def embedding_outcome(embed: Embedder, explanation: str, items: list[ScoredExample]) -> Outcome:
    """Similarity of each excerpt to the explanation, and their AUROC."""
    query = embed([explanation])[0]
    documents = embed([item.shown for item in items])
    values = [float(similarity) for similarity in documents @ query]
    for item, value in zip(items, values, strict=True):
        item.value = value
    labels = [item.label for item in items]
    metrics = {"auroc": auroc(labels, values), "n_examples": len(items), "n_failed": 0}
    error = None if metrics["auroc"] is not None else "auroc undefined: one class of excerpts is missing"
    return Outcome(metrics, [item.to_dict() for item in items], error)
