"""Token ids to text, as shown to LLMs: per-token pieces (special tokens blank) and whole windows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from autointerp.corpus import special_token_ids
from autointerp.modelpath import resolve_model_path


def load_tokenizer(model_path: str) -> PreTrainedTokenizerBase:
    """The subject model's tokenizer (the model's weights are not loaded)."""
    return AutoTokenizer.from_pretrained(resolve_model_path(model_path, "model.path"))


class TokenTexts:
    """Decodes token ids one piece per token, memoising each id's text."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer
        self.special = set(special_token_ids(tokenizer))
        self._pieces: dict[int, str] = {}

    def piece(self, token: int) -> str:
        """The text of one token (leading spaces kept); special tokens render as ''."""
        token = int(token)
        if token not in self._pieces:
            if token in self.special:
                text = ""
            else:
                raw = self.tokenizer.convert_ids_to_tokens(token)
                text = self.tokenizer.convert_tokens_to_string([raw])
            self._pieces[token] = text
        return self._pieces[token]

    def pieces(self, tokens: Sequence[int] | np.ndarray) -> list[str]:
        return [self.piece(t) for t in tokens]

    def text(self, tokens: Sequence[int] | np.ndarray) -> str:
        return "".join(self.pieces(tokens))
