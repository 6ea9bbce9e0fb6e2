"""Token ids to text, as shown to LLMs: per-token pieces (EOS as a visible document separator, other
special tokens blank) and whole windows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from autointerp.corpus import special_token_ids
from autointerp.modelpath import resolve_model_path

DOCUMENT_SEPARATOR = "<|endoftext|>"
"""How EOS, which joins documents in the cached stream, is shown, so a window spanning two documents does
not read as one."""


def load_tokenizer(model_path: str) -> PreTrainedTokenizerBase:
    """The subject model's tokenizer (the model's weights are not loaded)."""
    return AutoTokenizer.from_pretrained(resolve_model_path(model_path, "model.path"))


class TokenTexts:
    """Decodes token ids one piece per token, memoising each id's text."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer
        self.special = set(special_token_ids(tokenizer))
        self.eos = tokenizer.eos_token_id
        self._pieces: dict[int, str] = {}

    def piece(self, token: int) -> str:
        """The text of one token (leading spaces kept); EOS renders as `DOCUMENT_SEPARATOR`, other special
        tokens as ''."""
        token = int(token)
        if token not in self._pieces:
            if token == self.eos:
                text = DOCUMENT_SEPARATOR
            elif token in self.special:
                text = ""
            else:
                raw = self.tokenizer.convert_ids_to_tokens(token)
                text = self.tokenizer.convert_tokens_to_string([raw])
            self._pieces[token] = text
        return self._pieces[token]

    def pieces(self, tokens: Sequence[int] | np.ndarray) -> list[str]:
        known = self._pieces
        ids = tokens.tolist() if isinstance(tokens, np.ndarray) else tokens
        return [known[t] if t in known else self.piece(t) for t in ids]

    def text(self, tokens: Sequence[int] | np.ndarray) -> str:
        return "".join(self.pieces(tokens))
