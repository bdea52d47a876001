"""Baselines read what they say they read: the window, or every message before the snapshot."""

from __future__ import annotations

import numpy as np

from training.baselines import SplitData, fit_baselines


def split(n: int, seed: int) -> SplitData:
    """Positives said a tell-tale word once, early: outside the one-message window, inside all_texts."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 4 == 0).astype(np.int64)
    filler = ["gg", "lol", "nice stream", "hallo zusammen", "wie gehts"]
    windows, everything = [], []
    for label in labels:
        last = str(rng.choice(filler))
        first = "danke fürs abo sponsorship" if label else str(rng.choice(filler))
        windows.append(last)
        everything.append(f"{first} \n {last}")
    return SplitData(activity=rng.normal(size=(n, 3)), texts=windows, all_texts=everything,
                     mean_embeddings=rng.normal(size=(n, 2)), history=np.zeros((n, 0)), labels=labels,
                     weights=np.ones(n))


def test_tfidf_all_reads_the_messages_outside_the_window() -> None:
    from sklearn.metrics import average_precision_score

    train, val, test = split(200, 0), split(80, 1), split(80, 2)
    scores = fit_baselines(train, val, {"test": test}, with_history=False, label="member")
    assert set(scores) == {"activity", "tfidf", "tfidf_all", "mean_embedding"}
    window = average_precision_score(test.labels, scores["tfidf"]["test"])
    everything = average_precision_score(test.labels, scores["tfidf_all"]["test"])
    assert everything == 1.0 and window < 0.6, (window, everything)
