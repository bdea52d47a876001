"""The fast encoder tier: a static embedding (model2vec) distilled from the message encoder.

A message's vector is the (SIF-weighted) mean of its tokens' vectors: no attention, no batch, so it
costs a table lookup per token and cannot depend on the message's batch-mates. Same `dim` / `embed`
contract as models.onnx_encoder.OnnxEncoder; `training.embeddings.prepare_static_encoder` distils it.

Emoji are spelled out by their Unicode names before tokenising ("😂" -> "face with tears of joy"):
MiniLM's vocabulary has almost none of them, so a distilled table would map an emoji-only line (4 %
of real chat) to a zero vector, and every emoji to the same [UNK] one. Their names are words the
table knows, and unseen emoji get a meaningful vector too.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Joiners and variation selectors only glue emoji together; their names would be noise.
_GLUE = {"\u200d", "\ufe0e", "\ufe0f"}


def spell_out_symbols(text: str) -> str:
    """Each symbol character (Unicode category So: emoji, pictographs) replaced by its lower-case name."""
    if text.isascii():
        return text
    parts = []
    for char in text:
        if char in _GLUE or 0x1F3FB <= ord(char) <= 0x1F3FF:
            continue  # skin-tone modifiers say nothing about the message either
        if unicodedata.category(char) == "So":
            name = unicodedata.name(char, "")
            parts.append(f" {name.lower()} " if name else " ")
        else:
            parts.append(char)
    return "".join(parts)


@dataclass
class StaticEncoder:
    model: Any  # model2vec.StaticModel
    dim: int
    path: Path

    @classmethod
    def load(cls, path: Path) -> StaticEncoder:
        from model2vec import StaticModel

        from infra.errors import ModelNotFound

        if not (Path(path) / "model.safetensors").is_file():
            raise ModelNotFound(f"no static encoder in {path}; create one with `donorcast fit --encoder-tier static`")
        model = StaticModel.from_pretrained(str(path))
        return cls(model=model, dim=int(model.dim), path=Path(path))

    def embed(self, texts: Sequence[str], batch_size: int = 1024) -> np.ndarray:
        """(len(texts), dim) float32, rows in input order; one thread (no multiprocessing: workers scale by process)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        prepared = [spell_out_symbols(text or "") for text in texts]
        vectors = self.model.encode(prepared, batch_size=batch_size, use_multiprocessing=False)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)
