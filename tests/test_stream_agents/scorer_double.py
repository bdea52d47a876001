"""A small stand-in for the MODEL only (models.scorer.DonorScorer's interface), for tests of the
streaming mechanics that do not need a trained network: deterministic, fast, no ONNX files.

Kafka, PostgreSQL and faust stay real in every test that uses it. Its score rises with the share of
messages containing a "donor word", so tests can also check ranks.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.registry import ModelRegistry, ModelVersion
from models.scorer import FeatureConfig, ViewerSequenceInput, preprocess_text, sigmoid

DIM = 16
DONOR_WORDS = ("love", "thanks", "support", "amazing")


class ScorerDouble:
    embedding_dim = DIM

    def __init__(self, version: str, feature_config: FeatureConfig, bias: float = 0.0) -> None:
        self.version = version
        self.feature_config = feature_config
        self.bias = bias

    @property
    def uses_history(self) -> bool:
        return self.feature_config.use_history

    def preprocess(self, text: str) -> str:
        return preprocess_text(text, self.feature_config)

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        rows = []
        for text in texts:
            clean = self.preprocess(text)
            rng = np.random.default_rng(zlib.crc32(clean.encode()))
            row = rng.standard_normal(DIM).astype(np.float32) * 0.1
            row[0] = 1.0 if any(w in clean.lower() for w in DONOR_WORDS) else -1.0
            rows.append(row)
        return np.asarray(rows, dtype=np.float32).reshape(len(texts), DIM)

    def _logit(self, sequence: ViewerSequenceInput) -> float:
        tail = sequence.tail(self.feature_config.max_messages)
        history = 0.0 if tail.history is None else float(tail.history.sum())
        return float(tail.embeddings[:, 0].mean() * 3 + 0.05 * len(tail) + history + self.bias)

    def score(self, sequences: Sequence[ViewerSequenceInput]) -> np.ndarray:
        return sigmoid(np.asarray([self._logit(s) for s in sequences], dtype=np.float32))

    def explain(self, sequence: ViewerSequenceInput, k: int = 3) -> list[int]:
        tail = sequence.tail(self.feature_config.max_messages)
        order = np.argsort(-tail.embeddings[:, 0], kind="stable")
        return [int(i) for i in order[:k]]


def load_double(version: ModelVersion, *, threads: int = 1) -> ScorerDouble:
    """Loader for ModelRunner / create_app: reads the version's feature config and bias."""
    return ScorerDouble(
        version.version,
        FeatureConfig.from_dict(version.manifest.get("feature_config", {})),
        bias=float(version.manifest.get("double_bias", 0.0)),
    )


def promote_double(registry_dir: Path, *, bias: float = 0.0, use_history: bool = False) -> ModelVersion:
    """Commit and promote a registry version the double can load (a manifest, no model files)."""
    registry = ModelRegistry(registry_dir)
    version, path = registry.create_version(prefix="double-")
    (path / "double.json").write_text(json.dumps({"bias": bias}))
    committed = registry.commit(version, {
        "files": {"double": "double.json"},
        "feature_config": FeatureConfig(use_history=use_history).to_dict(),
        "double_bias": bias,
    })
    registry.promote(version)
    return committed
