"""Baselines fitted on the same samples and split as the transformer (scikit-learn).

- activity: how much and how the viewer chatted before the snapshot -> logistic regression;
  like the transformer (and the live agents, which score when a message arrives) it sees the
  viewer's messages, not the clock between them: no "seconds since the last message" feature;
- tfidf: word (1-2) and char (2-5) n-grams of the input window + activity -> logistic regression;
- tfidf_all: the same over ALL the viewer's messages before the snapshot, not only the newest
  `max_messages` the transformer reads: the stronger text baseline (and the protocol of the issue's
  orientation figures); it has more text than the model it is compared with;
- mean_embedding: mean message embedding of the window + activity -> logistic regression;
- history_rule (with-history track only): "was a member before" / "paid before", no learning.

In the with-history track every learned baseline also gets the viewer-history vector. The
regularisation strength C is chosen on validation PR-AUC, like the transformer's early stopping.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.preprocessing import StandardScaler

from models.scorer import _emote_ratio, history_vector
from training.build_dataset import Dataset, Sample
from training.features import FeatureSet

C_GRID = (0.1, 1.0, 10.0)
ACTIVITY_FEATURES = (
    "log_messages", "log_seconds_first_to_last", "log_last_message_seconds", "log_mean_gap",
    "log_mean_length", "messages_per_minute", "question_share", "emote_share",
)


def activity_features(dataset: Dataset, samples: list[Sample]) -> np.ndarray:
    """(N, 8): counts and pace over ALL the viewer's input messages before the snapshot, as known
    at their last message (see ACTIVITY_FEATURES)."""
    rows = []
    for sample in samples:
        track = dataset.tracks[sample.track]
        seconds = track.seconds[: sample.end]
        texts = track.texts[: sample.end]
        span = float(seconds[-1] - seconds[0])
        rows.append((
            np.log1p(sample.end),
            np.log1p(span),
            np.log1p(float(seconds[-1])),
            np.log1p(span / max(sample.end - 1, 1)),
            np.log1p(np.mean([len(t) for t in texts])),
            60.0 * sample.end / max(span, 60.0),
            np.mean(["?" in t for t in texts]),
            np.mean([_emote_ratio(t) for t in texts]),
        ))
    return np.asarray(rows, dtype=np.float64)


def window_texts(dataset: Dataset, samples: list[Sample], max_messages: int | None) -> list[str]:
    """The same input window the transformer sees, as one document (None: every message before the snapshot)."""
    out = []
    for sample in samples:
        track = dataset.tracks[sample.track]
        start = 0 if max_messages is None else max(0, sample.end - max_messages)
        out.append(" \n ".join(track.texts[start : sample.end]))
    return out


def history_matrix(dataset: Dataset, samples: list[Sample]) -> np.ndarray:
    return np.stack([history_vector(dataset.tracks[s.track].history) for s in samples]).astype(np.float64)


@dataclass
class SplitData:
    """Everything a baseline may read about one split's samples."""

    activity: np.ndarray
    texts: list[str]  # the transformer's input window
    all_texts: list[str]  # every input message before the snapshot
    mean_embeddings: np.ndarray
    history: np.ndarray
    labels: np.ndarray
    weights: np.ndarray


def _fit_lr(
    train_x: np.ndarray | sparse.spmatrix, train: SplitData, val_x: np.ndarray | sparse.spmatrix, val: SplitData,
    seed: int,
) -> tuple[LogisticRegression, float]:
    """Weighted, class-balanced LR; C picked on validation PR-AUC."""
    best: tuple[float, LogisticRegression] | None = None
    for c in C_GRID:
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed)
        model.fit(train_x, train.labels, sample_weight=train.weights)
        score = average_precision_score(val.labels, model.predict_proba(val_x)[:, 1], sample_weight=val.weights)
        if best is None or score > best[0]:
            best = (score, model)
    assert best is not None
    return best[1], best[0]


def tfidf_features(
    train: SplitData, activity: Callable[[SplitData], np.ndarray], texts: Callable[[SplitData], list[str]],
) -> Callable[[SplitData], sparse.spmatrix]:
    """Word (1-2) and char (2-5) n-gram TF-IDF of `texts`, fitted on the training split, beside activity."""
    word = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=50000, sublinear_tf=True)
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, max_features=100000, sublinear_tf=True)
    word.fit(texts(train) or [""])
    char.fit(texts(train) or [""])
    return lambda d: sparse.hstack([word.transform(texts(d)), char.transform(texts(d)),
                                    sparse.csr_matrix(activity(d))]).tocsr()


def fit_baselines(
    train: SplitData, val: SplitData, evaluate: dict[str, SplitData], *, with_history: bool, label: str,
    seed: int = 0, progress: Callable[[str], None] | None = None,
    names: Sequence[str] = ("activity", "tfidf", "tfidf_all", "mean_embedding"),
) -> dict[str, dict[str, np.ndarray]]:
    """{baseline name: {split name: probabilities}} for "val" and every split in `evaluate`."""
    splits = {"val": val, **evaluate}
    out: dict[str, dict[str, np.ndarray]] = {}
    if len(np.unique(train.labels)) < 2:
        return out

    def dense(block: Callable[[SplitData], np.ndarray]) -> Callable[[SplitData], np.ndarray]:
        scaler = StandardScaler().fit(block(train))
        if with_history:
            return lambda d: np.hstack([scaler.transform(block(d)), d.history])
        return lambda d: scaler.transform(block(d))

    activity = dense(lambda d: d.activity)
    builders: dict[str, Callable[[], Callable[[SplitData], Any]]] = {  # built only when asked for
        "activity": lambda: activity,
        "tfidf": lambda: tfidf_features(train, activity, lambda d: d.texts),
        "tfidf_all": lambda: tfidf_features(train, activity, lambda d: d.all_texts),
        "mean_embedding": lambda: dense(lambda d: np.hstack([d.activity, d.mean_embeddings])),
    }
    for name in names:
        featurise = builders[name]()
        if progress:
            progress(f"baseline {name}")
        model, _ = _fit_lr(featurise(train), train, featurise(val), val, seed)
        out[name] = {split: model.predict_proba(featurise(d))[:, 1] for split, d in splits.items()}
    if with_history:
        column = 2 if label == "paid" else 4  # past paid events / was a member (models.scorer.history_vector)
        out["history_rule"] = {split: (d.history[:, column] > 0).astype(np.float64) for split, d in splits.items()}
    return out


def baseline_splits(dataset: Dataset, sets: dict[str, FeatureSet], max_messages: int) -> dict[str, SplitData]:
    """What each baseline may read about the samples of each named feature set."""
    return {
        name: SplitData(
            activity=activity_features(dataset, fs.samples), texts=window_texts(dataset, fs.samples, max_messages),
            all_texts=window_texts(dataset, fs.samples, None),
            mean_embeddings=fs.mean_embeddings(), history=history_matrix(dataset, fs.samples),
            labels=fs.labels.astype(np.int64), weights=fs.weights.astype(np.float64),
        )
        for name, fs in sets.items() if len(fs)
    }
