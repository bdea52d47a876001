"""Hashed lexical features: each message as a small bag of word and character-trigram ids.

The frozen sentence encoder was trained on English; chat here is German and Indonesian slang,
nicknames, @mentions and emotes, which it maps to a few blurry regions. The TF-IDF baseline shows
how much plain surface forms carry, so the classifier also learns its own vectors for them: every
message becomes up to `per_message` ids (its lowercased words and the character trigrams of each
word, hashed into `buckets` - 1 slots; 0 is padding), and the model adds the mean of their learned
vectors to the message's encoder projection. Hashing needs no vocabulary file and gives the same
ids in training, in the live agents and in offline scoring.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np

_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def lexical_tokens(text: str) -> list[str]:
    """Words (lowercased; a symbol or emoji counts as one) and then the trigrams of each word."""
    words = [w.lower() for w in _WORD.findall(text)]
    trigrams = [f"<{w}>"[i : i + 3] for w in words if len(w) > 1 for i in range(len(w))]
    return [f"w {w}" for w in words] + [f"c {t}" for t in trigrams]


def lexical_ids(text: str, buckets: int, per_message: int) -> np.ndarray:
    """(per_message,) int64: distinct hashed ids in token order, 0-padded. Words come first, so a
    long message drops trigrams before words."""
    return lexical_matrix([text], buckets, per_message)[0]


def lexical_matrix(texts: Sequence[str] | Iterable[str], buckets: int, per_message: int) -> np.ndarray:
    """(T, per_message) ids for a list of *preprocessed* texts."""
    rows = [_hashed(text, buckets, per_message) for text in texts]
    out = np.zeros((len(rows), per_message), dtype=np.int64)
    for row, ids in enumerate(rows):
        out[row, : len(ids)] = ids
    return out


# The live agents rebuild a viewer's whole window each time it is scored: the same texts again.
@lru_cache(maxsize=50_000)
def _hashed(text: str, buckets: int, per_message: int) -> tuple[int, ...]:
    seen: dict[int, None] = {}
    for token in lexical_tokens(text):
        seen.setdefault(1 + zlib.crc32(token.encode("utf-8")) % (buckets - 1), None)
        if len(seen) == per_message:
            break
    return tuple(seen)
