"""DonorScorer (the live agents' scorer) against the PyTorch classifier it was exported from."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import numpy as np
import pytest
import torch

from models.classifier import leave_one_out, load_classifier
from models.scorer import DonorScorer, FeatureConfig, preprocess_text, seconds_since_start, sequence_input
from tests.test_training.test_fit_support import fitted, fitted_static, shared_cache
from training.build_dataset import DatasetConfig, build_dataset
from training.evaluate import version_features
from training.train_classifier import _tensors

torch.set_num_threads(1)


def _setup(track: str = "history", fit: Callable = fitted):
    _, results, streams = fit()
    version = results.tracks[track].version
    dataset = build_dataset(streams, DatasetConfig(**version.manifest["dataset_config"]))
    test = [dataset.samples[i] for i in dataset.indices("test")][:120]
    scorer, features = version_features(version, dataset, test, shared_cache())
    return version, dataset, streams, scorer, features


def test_onnx_scorer_matches_pytorch_on_the_same_inputs() -> None:
    for track in ("chat", "history"):
        version, _, _, scorer, features = _setup(track)
        assert scorer.version == version.version
        assert scorer.uses_history == (track == "history")
        assert scorer.embedding_dim == features.embeddings.shape[1] == 384
        model = load_classifier(version.file("classifier_pt"))
        with torch.no_grad():
            logits = model(**_tensors(features.feed(range(len(features))), "cpu")).numpy()
        sequences = [features.sequence(i) for i in range(len(features))]
        np.testing.assert_allclose(scorer.logits(sequences), logits, atol=1e-4)  # one padded batch of all viewers
        # The served probability is the validation-fitted Platt map of that same logit.
        assert scorer.calibration.method == "platt"
        np.testing.assert_allclose(scorer.score(sequences), scorer.calibration.probabilities(logits), atol=1e-5)


def test_padding_in_a_batch_changes_nothing() -> None:
    _, _, _, scorer, features = _setup()
    sequences = [features.sequence(i) for i in range(40)]
    assert len({len(s) for s in sequences}) > 3
    together = scorer.score(sequences)
    alone = np.concatenate([scorer.score([s]) for s in sequences])
    np.testing.assert_allclose(together, alone, atol=1e-5)


@pytest.mark.parametrize(("tier", "track", "fit"), [("bert", "history", fitted), ("static", "chat", fitted_static)])
def test_live_path_builds_the_training_features_from_raw_messages(tier: str, track: str, fit: Callable) -> None:
    """From raw ChatMessages, the way the agents do it: preprocessing, clocks, numbers, extras and
    history equal the training features exactly, and so do the scores, for both encoder tiers: the
    int8 encoder is batch-invariant, so the worker's pieces of 8 give training's vectors (batches
    of 64), and the static table has no batch at all."""
    version, dataset, streams, scorer, features = _setup(track, fit)
    assert version.encoder_tier == tier
    by_id = {s.stream_id: sorted(s.messages, key=lambda m: m.timestamp) for s in streams}
    live, train = [], []
    for i, sample in enumerate(features.samples[:60]):
        track = dataset.tracks[sample.track]
        info = dataset.streams[track.stream]
        messages = by_id[info.stream_id]
        origin = messages[0].timestamp.timestamp()
        snapshot = info.start + timedelta(seconds=sample.snapshot_seconds)
        mine = [m for m in messages if m.viewer_id == track.viewer_id and m.is_model_input and m.timestamp < snapshot]
        first = max(0, len(mine) - scorer.feature_config.max_messages)
        clocks = [seconds_since_start(m.timestamp.timestamp(), m.offset_seconds, origin) for m in mine]
        window = mine[first:]
        sequence = sequence_input(
            scorer.embed([m.text for m in window]), clocks[first:],
            texts=[scorer.preprocess(m.text) for m in window], message_numbers=range(first + 1, len(mine) + 1),
            config=scorer.feature_config, previous_seconds=clocks[first - 1] if first else None,
            history=track.history, message_ids=[m.message_id for m in window],
        )
        reference = features.sequence(i)
        assert sequence.message_ids == reference.message_ids
        np.testing.assert_allclose(sequence.seconds_since_start, reference.seconds_since_start, atol=1e-3)
        np.testing.assert_allclose(sequence.seconds_since_prev, reference.seconds_since_prev, atol=1e-3)
        np.testing.assert_allclose(sequence.extras, reference.extras, atol=1e-6)
        np.testing.assert_array_equal(sequence.history, reference.history)
        live.append(sequence)
        train.append(reference)
    difference = np.abs(scorer.score(live) - scorer.score(train))
    print(f"\nlive vs training scores: max |difference| {difference.max():.2e}")
    assert difference.max() <= 1e-3, difference.max()


def test_explain_is_leave_one_out_of_the_pytorch_model() -> None:
    version, _, _, scorer, features = _setup("chat")
    model = load_classifier(version.file("classifier_pt"))
    checked = 0
    for i in range(len(features)):
        sequence = features.sequence(i)
        if len(sequence) < 4:
            continue
        feed = _tensors(features.feed([i]), "cpu")
        deltas = leave_one_out(model, feed).numpy()
        expected = [int(j) for j in np.argsort(-deltas, kind="stable")[:3] if deltas[j] > 0] or [int(np.argmax(deltas))]
        assert scorer.explain(sequence, k=3) == expected
        checked += 1
        if checked == 5:
            break
    assert checked == 5


def test_member_signals_are_stripped_only_for_membership_labels() -> None:
    text = "hi  :_channelHeart: there"
    assert preprocess_text(text, FeatureConfig(label="member", strip_member_signals=True)) == "hi there"
    assert preprocess_text(text, FeatureConfig(label="paid")) == "hi :_channelHeart: there"


def test_load_reads_the_manifest(tmp_path) -> None:
    version, *_ = _setup("chat")
    scorer = DonorScorer.load(version, threads=1)
    assert scorer.threshold == version.manifest["threshold"]
    assert scorer.feature_config == FeatureConfig.from_dict(version.manifest["feature_config"])
    assert scorer.embed(["hello chat"]).dtype == np.float32


def test_embed_encodes_each_distinct_text_once_and_matches_the_encoder() -> None:
    version, *_ = _setup("chat")
    scorer = DonorScorer.load(version, threads=1)
    texts = ["gg", "what a stream", "gg", "a much longer message about the game tonight", "gg"]
    direct = scorer.encoder.embed([scorer.preprocess(t) for t in texts], batch_size=64)
    encoded: list[str] = []
    real_embed = scorer.encoder.embed
    scorer.encoder.embed = lambda batch, batch_size: encoded.extend(batch) or real_embed(batch, batch_size)
    vectors = scorer.embed(texts)
    np.testing.assert_allclose(vectors, direct, atol=1e-5)  # bucketed pieces == one padded batch
    assert sorted(encoded) == sorted(scorer.preprocess(t) for t in set(texts))  # "gg" encoded once
    again = scorer.embed(["gg", "what a stream"])
    np.testing.assert_array_equal(again, vectors[:2])
    assert len(encoded) == 3 and scorer.cache.hits == 2


def test_worker_vectors_do_not_depend_on_batch_mates_or_cache_state() -> None:
    """The worker's embed path (DonorScorer.embed: cache, length-sorted pieces of 8) gives a text the
    same vector alone, in one call of 40 mixed lengths, and in a later call where half are cached."""
    version, _, streams, *_ = _setup("chat")
    texts = list(dict.fromkeys(m.text for s in streams for m in s.messages if m.is_model_input))
    texts = sorted(texts, key=len)[:: max(1, len(texts) // 40)][:40]  # short to long
    assert len(texts) == 40 and len(texts[-1]) > 3 * len(texts[0])
    alone = np.concatenate([DonorScorer.load(version, threads=1).embed([t]) for t in texts[:12]])
    together = DonorScorer.load(version, threads=1)
    batched = together.embed(texts)
    warm = DonorScorer.load(version, threads=1)
    warm.embed(texts[::2])
    mixed = warm.embed(texts[::-1])[::-1]
    assert warm.cache.hits == 20
    assert np.abs(batched[:12] - alone).max() <= 1e-5
    assert np.abs(mixed - batched).max() <= 1e-5


def test_vector_cache_drops_the_least_recently_used() -> None:
    from models.vector_cache import VectorCache

    cache = VectorCache(2)
    cache.put("a", np.zeros(2)), cache.put("b", np.ones(2))
    assert cache.get("a") is not None  # "b" is now the least recently used
    cache.put("c", np.ones(2))
    assert cache.get("b") is None and cache.get("a") is not None and len(cache) == 2
