"""Ranking metrics as a streamer reads them: within each stream, who is on top, with uncertainty.

Pooled ROC-AUC mixes streams: a model can score well by ranking whole streams (their size,
length, donor share) rather than viewers. The leaderboard is per stream, so the headline numbers
here are per stream: ROC-AUC within each stream (mean over streams with both classes) and
precision among each stream's top k. Uncertainty comes from resampling whole streams (bootstrap),
and a permutation test that shuffles labels within each stream says whether a within-stream
ROC-AUC above 0.5 could be chance (the NULL preset's leak check).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def stream_groups(stream_ids: Sequence[str]) -> list[np.ndarray]:
    """Row indices of each stream, in first-seen order."""
    rows: dict[str, list[int]] = defaultdict(list)
    for i, stream in enumerate(stream_ids):
        rows[stream].append(i)
    return [np.asarray(r) for r in rows.values()]


def per_stream_auc(labels: np.ndarray, scores: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """ROC-AUC of each stream that has both classes (NaN for the others)."""
    out = np.full(len(groups), np.nan)
    for g, rows in enumerate(groups):
        y = labels[rows]
        if 0 < y.sum() < len(y):
            out[g] = roc_auc_score(y, scores[rows])
    return out


def per_stream_precision_at_k(labels: np.ndarray, scores: np.ndarray, groups: list[np.ndarray], k: int) -> np.ndarray:
    """Share of payers among each stream's k highest scores (ties broken by row order)."""
    out = np.zeros(len(groups))
    for g, rows in enumerate(groups):
        order = rows[np.argsort(-scores[rows], kind="stable")][:k]
        out[g] = labels[order].mean() if len(order) else np.nan
    return out


def bootstrap_ci(values: np.ndarray, *, rounds: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of per-stream values, streams resampled with replacement."""
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(rounds, len(values)), replace=True).mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def permutation_p(labels: np.ndarray, scores: np.ndarray, groups: list[np.ndarray], *, rounds: int = 1000,
                  seed: int = 0) -> float:
    """One-sided p of the mean within-stream ROC-AUC: labels shuffled within each stream."""
    observed = np.nanmean(per_stream_auc(labels, scores, groups))
    rng = np.random.default_rng(seed)
    shuffled = labels.copy()
    hits = 0
    for _ in range(rounds):
        for rows in groups:
            shuffled[rows] = rng.permutation(labels[rows])
        hits += np.nanmean(per_stream_auc(shuffled, scores, groups)) >= observed
    return float((hits + 1) / (rounds + 1))


def ranking_report(labels: np.ndarray, scores: np.ndarray, stream_ids: Sequence[str], *, k: int = 10,
                   bootstrap_rounds: int = 1000, permutations: int = 0, seed: int = 0) -> dict[str, float]:
    labels = np.asarray(labels, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    groups = stream_groups(stream_ids)
    aucs = per_stream_auc(labels, scores, groups)
    p_at_k = per_stream_precision_at_k(labels, scores, groups, k)
    low, high = bootstrap_ci(aucs, rounds=bootstrap_rounds, seed=seed)
    p_low, p_high = bootstrap_ci(p_at_k, rounds=bootstrap_rounds, seed=seed)
    both = len(np.unique(labels)) == 2
    report = {
        "rows": float(len(labels)), "positives": float(labels.sum()), "streams": float(len(groups)),
        "within_stream_roc_auc": float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan"),
        "within_stream_roc_auc_ci_low": low, "within_stream_roc_auc_ci_high": high,
        "pooled_roc_auc": float(roc_auc_score(labels, scores)) if both else float("nan"),
        "pr_auc": float(average_precision_score(labels, scores)) if both else float("nan"),
        f"p_at_{k}": float(np.nanmean(p_at_k)), f"p_at_{k}_ci_low": p_low, f"p_at_{k}_ci_high": p_high,
        f"random_p_at_{k}": float(np.mean([labels[rows].mean() for rows in groups])),
    }
    if permutations:
        report["permutation_p"] = permutation_p(labels, scores, groups, rounds=permutations, seed=seed)
    return report
