"""Classifier inputs of dataset samples, built from one shared embedding matrix.

Each distinct text inside some sample's window is embedded once; a sample is then a slice of its
track's per-message arrays. `FeatureSet.sequence` goes through the live path's types
(`models.scorer.ViewerSequenceInput`, `pad_batch`); `PackedFeatures` is the same data as padded
arrays for fast training batches (equal feeds, tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.lexical import lexical_matrix
from models.scorer import (
    FeatureConfig,
    ViewerSequenceInput,
    history_vector,
    message_extras,
    pad_batch,
    time_features,
    window_clock,
)
from training.build_dataset import Dataset, Sample
from training.embeddings import EmbeddingCache, EmbedFn, embed_texts


@dataclass
class TrackArrays:
    rows: np.ndarray  # (n,) row of each message in the embedding matrix (-1: not needed)
    starts: np.ndarray  # (n,) seconds since stream start
    gaps: np.ndarray  # (n,) seconds since the viewer's previous input message
    extras: np.ndarray  # (n, 4)


@dataclass
class FeatureSet:
    """Classifier inputs for a list of samples, built from one shared embedding matrix."""

    dataset: Dataset
    samples: list[Sample]
    config: FeatureConfig
    tracks: dict[int, TrackArrays]
    embeddings: np.ndarray
    lexical: np.ndarray | None = None  # (U, K) hashed ids per distinct text, rows as in `embeddings`

    @property
    def labels(self) -> np.ndarray:
        return np.asarray([s.label for s in self.samples], dtype=np.float32)

    @property
    def weights(self) -> np.ndarray:
        return np.asarray([s.weight for s in self.samples], dtype=np.float32)

    def __len__(self) -> int:
        return len(self.samples)

    def sequence(self, i: int) -> ViewerSequenceInput:
        sample = self.samples[i]
        arrays, track = self.tracks[sample.track], self.dataset.tracks[sample.track]
        first = max(0, sample.end - self.config.max_messages)
        window = slice(first, sample.end)
        return ViewerSequenceInput(
            embeddings=self.embeddings[arrays.rows[window]],
            seconds_since_start=window_clock(arrays.starts[window], self.config.clock),
            seconds_since_prev=arrays.gaps[window],
            extras=arrays.extras[window] if self.config.use_extras else None,
            history=history_vector(track.history) if self.config.use_history else None,
            message_ids=tuple(track.message_ids[window]),
            lexical=self._lexical_rows(arrays.rows[window]),
        )

    def _lexical_rows(self, rows: np.ndarray) -> np.ndarray | None:
        if not self.config.uses_lexical:
            return None
        if self.lexical is None:
            raise ValueError("the model reads hashed lexical ids; these features were built without them")
        return self.lexical[rows]

    def feed(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        """The ONNX/PyTorch feed for some samples, through `pad_batch` (the live path)."""
        return pad_batch([self.sequence(i) for i in indices], self.config)

    def packed(self) -> PackedFeatures:
        """All samples as fixed-width arrays (row indices, not vectors): fast batches for training."""
        n, width = len(self), self.config.max_messages
        packed = PackedFeatures(
            rows=np.full((n, width), -1, dtype=np.int64),
            starts=np.zeros((n, width), dtype=np.float32), gaps=np.zeros((n, width), dtype=np.float32),
            extras=np.zeros((n, width, self.config.n_extras), dtype=np.float32),
            history=np.zeros((n, self.config.n_history), dtype=np.float32),
            lengths=np.zeros(n, dtype=np.int64), embeddings=self.embeddings, config=self.config,
            lexical=self.lexical if self.config.uses_lexical else None,
        )
        for i, sample in enumerate(self.samples):
            arrays, track = self.tracks[sample.track], self.dataset.tracks[sample.track]
            window = slice(max(0, sample.end - width), sample.end)
            t = window.stop - window.start
            packed.rows[i, :t] = arrays.rows[window]
            packed.starts[i, :t] = window_clock(arrays.starts[window], self.config.clock)
            packed.gaps[i, :t] = arrays.gaps[window]
            if self.config.use_extras:
                packed.extras[i, :t] = arrays.extras[window]
            if self.config.use_history:
                packed.history[i] = history_vector(track.history)
            packed.lengths[i] = t
        return packed

    def mean_embeddings(self) -> np.ndarray:
        return np.stack([self.sequence(i).embeddings.mean(axis=0) for i in range(len(self))])

    def subset(self, samples: list[Sample]) -> FeatureSet:
        return FeatureSet(self.dataset, samples, self.config, self.tracks, self.embeddings, self.lexical)


@dataclass
class PackedFeatures:
    """Samples as padded arrays; `feed(index)` equals `FeatureSet.feed(index)` (tested)."""

    rows: np.ndarray  # (N, W) embedding row per message, -1 = padding
    starts: np.ndarray  # (N, W)
    gaps: np.ndarray  # (N, W)
    extras: np.ndarray  # (N, W, k)
    history: np.ndarray  # (N, h)
    lengths: np.ndarray  # (N,)
    embeddings: np.ndarray  # (U, D)
    config: FeatureConfig
    lexical: np.ndarray | None = None  # (U, K)

    def feed(self, index: np.ndarray) -> dict[str, np.ndarray]:
        width = int(self.lengths[index].max())  # pad to the batch's longest, like pad_batch
        rows = self.rows[index, :width]
        feed = {
            "embeddings": np.where((rows >= 0)[..., None], self.embeddings[np.maximum(rows, 0)], 0.0).astype(np.float32),
            "seconds_since_start": self.starts[index, :width],
            "seconds_since_prev": self.gaps[index, :width],
            "padding_mask": rows < 0,
        }
        if self.config.use_extras:
            feed["extras"] = self.extras[index, :width]
        if self.config.use_history:
            feed["history"] = self.history[index]
        if self.lexical is not None:
            feed["lexical_ids"] = np.where((rows >= 0)[..., None], self.lexical[np.maximum(rows, 0)], 0).astype(np.int64)
        return feed


def track_arrays(texts: Sequence[str], seconds: np.ndarray, rows: np.ndarray) -> TrackArrays:
    """Per-message features of a whole track; a window's slice equals what `sequence_input` builds
    for that window (gaps and message numbers do not depend on where the window starts)."""
    starts, gaps = time_features(seconds)
    return TrackArrays(rows=rows, starts=starts, gaps=gaps,
                       extras=message_extras(texts, range(1, len(texts) + 1)))


def build_features(
    dataset: Dataset, samples: Sequence[Sample], config: FeatureConfig, embed: EmbedFn,
    cache: EmbeddingCache | None, *, progress: bool = False,
) -> FeatureSet:
    """Embed every distinct text inside some sample's window (once), then index tracks into it."""
    needed: dict[int, tuple[int, int]] = {}
    for sample in samples:
        first = max(0, sample.end - config.max_messages)
        low, high = needed.get(sample.track, (first, sample.end))
        needed[sample.track] = (min(low, first), max(high, sample.end))
    vocabulary: dict[str, int] = {}
    for track_index, (low, high) in needed.items():
        for text in dataset.tracks[track_index].texts[low:high]:
            vocabulary.setdefault(text, len(vocabulary))
    matrix = embed_texts(list(vocabulary), embed, cache, progress=progress)
    lexical = (lexical_matrix(vocabulary, config.lexical_buckets, config.lexical_per_message).astype(np.int32)
               if config.uses_lexical else None)
    tracks = {}
    for track_index, (low, high) in needed.items():
        track = dataset.tracks[track_index]
        rows = np.full(len(track.texts), -1, dtype=np.int64)
        rows[low:high] = [vocabulary[t] for t in track.texts[low:high]]
        tracks[track_index] = track_arrays(track.texts, track.clock, rows)
    return FeatureSet(dataset=dataset, samples=list(samples), config=config, tracks=tracks, embeddings=matrix,
                      lexical=lexical)
