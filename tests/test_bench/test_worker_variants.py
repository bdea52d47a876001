"""The candidate-fix worker variants change exactly what they say, and refuse unknown names."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from bench.machine import REPO_ROOT


class RecordingEncoder:
    dim = 3

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []

    def embed(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        self.batch_sizes.append(batch_size)
        return np.zeros((len(texts), 3), dtype=np.float32)


def test_embed_pieces_variant_changes_only_the_piece_size(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.worker_variants import VARIANTS
    from models.scorer import EMBED_PIECE_SIZE, DonorScorer, FeatureConfig

    monkeypatch.setattr(DonorScorer, "embed", DonorScorer.embed)  # restored after the test
    encoder = RecordingEncoder()
    scorer = DonorScorer(version="v", encoder=encoder, session=None, feature_config=FeatureConfig())
    scorer.embed(["a", "b"])
    assert encoder.batch_sizes == [EMBED_PIECE_SIZE] == [8]  # the stock worker (embed-pieces-8, adopted)
    VARIANTS["embed-pieces-4"]()
    vectors = scorer.embed(["a", "b", "c"])  # "a" and "b" come from the text cache
    assert encoder.batch_sizes == [8, 4] and vectors.shape == (3, 3)


def test_unknown_variant_is_refused() -> None:
    env = dict(os.environ, DONORCAST_BENCH_WORKER_VARIANT="no-such-fix")
    done = subprocess.run([sys.executable, "-m", "bench.worker_variants", "worker"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and "embed-pieces-8" in done.stderr


async def test_no_settle_variant_skips_only_the_acknowledgement_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    import stream_agents.pipeline as pipeline
    from bench.worker_variants import VARIANTS

    monkeypatch.setattr(pipeline, "acknowledged", pipeline.acknowledged)  # restored after the test
    settled: list[int] = []

    class Rt:
        async def settle(self) -> None:
            settled.append(1)

    await pipeline.acknowledged(Rt())
    assert settled == [1]  # the stock worker waits for the broker
    VARIANTS["no-settle"]()
    await pipeline.acknowledged(Rt())
    assert settled == [1]
