"""Hashed lexical ids: deterministic across processes, words before trigrams, bounded, 0-padded."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from models.lexical import lexical_ids, lexical_matrix, lexical_tokens


def test_tokens_are_lowercased_words_then_their_trigrams() -> None:
    tokens = lexical_tokens("Hallo @Petrik 😂")
    assert tokens[:4] == ["w hallo", "w @", "w petrik", "w 😂"]
    assert "c <ha" in tokens and "c lo>" in tokens and "c ik>" in tokens
    assert not any(t.startswith("c") and "😂" in t for t in tokens)  # one-character words make no trigrams


def test_ids_are_distinct_bounded_and_padded() -> None:
    ids = lexical_ids("gg gg gg wp", buckets=1000, per_message=48)
    assert ids.shape == (48,) and ids.dtype == np.int64
    real = ids[ids > 0]
    assert len(real) == len(set(real.tolist()))  # "gg" three times is one id
    assert real.min() >= 1 and real.max() < 1000
    assert (ids[len(real):] == 0).all()
    long = lexical_ids(" ".join(f"word{i}" for i in range(100)), buckets=1 << 16, per_message=8)
    words = [lexical_ids(f"word{i}", buckets=1 << 16, per_message=1)[0] for i in range(8)]
    assert long.tolist() == words  # a long message keeps its first words, not trigrams


def test_ids_do_not_depend_on_the_process() -> None:
    """Training, the live agents and offline scoring run in different processes (and Python's own
    str hash is salted per process): the ids must be the same everywhere."""
    code = "from models.lexical import lexical_ids; print(lexical_ids('Moin zusammen :)', 1 << 16, 12).tolist())"
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            for _ in range(2)}
    assert len(runs) == 1
    assert runs.pop().strip() == str(lexical_ids("Moin zusammen :)", 1 << 16, 12).tolist())


def test_matrix_of_no_texts_keeps_its_width() -> None:
    assert lexical_matrix([], buckets=100, per_message=6).shape == (0, 6)
    assert lexical_matrix(["a b", ""], buckets=100, per_message=6).shape == (2, 6)
