"""MessageEncoder on the packaged MiniLM: shapes, order restored after length sorting, no padding effect."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from infra.errors import ModelNotFound
from models.encoder import MessageEncoder, default_base_model_dir, length_sorted_batches

TEXTS = ["hallo", "", "das ist ein deutlich längerer Satz mit vielen Wörtern", "lol KEKW", "gg wp", "a " * 200]


@pytest.fixture(scope="module")
def encoder() -> MessageEncoder:
    return MessageEncoder.load(threads=1, max_length=32)


def test_default_base_model_is_the_packaged_minilm() -> None:
    assert (default_base_model_dir() / "config.json").is_file()


def test_embed_shapes_and_dtype(encoder: MessageEncoder) -> None:
    vectors = encoder.embed(TEXTS, batch_size=4)
    assert encoder.dim == 384
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    assert encoder.embed([]).shape == (0, 384)


def test_batching_and_padding_do_not_change_vectors(encoder: MessageEncoder) -> None:
    batched = encoder.embed(TEXTS, batch_size=3)
    one_by_one = np.stack([encoder.embed([text])[0] for text in TEXTS])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    # Different texts give different vectors, so order restoration is really checked.
    assert np.abs(batched[0] - batched[3]).max() > 1e-2


def test_similar_messages_are_closer_than_unrelated_ones(encoder: MessageEncoder) -> None:
    a, b, c = encoder.embed(["what a great goal", "what an amazing goal", "my cat sleeps on the sofa"])
    cos = lambda x, y: float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))  # noqa: E731
    assert cos(a, b) > cos(a, c)


def test_length_sorted_batches_cover_every_index_once() -> None:
    batches = list(length_sorted_batches([3, 9, 1, 9, 4], batch_size=2))
    assert sorted(np.concatenate(batches).tolist()) == [0, 1, 2, 3, 4]
    assert batches[0].tolist() == [1, 3]


def test_load_rejects_a_folder_without_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="config.json"):
        MessageEncoder.load(tmp_path)
