"""Coherence-decay analysis: exact pair binning, a decaying curve on topic-structured chat, and the CLI."""

from __future__ import annotations

import json
import random
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.test_training.test_pretrain_mlm import tiny_checkpoint
from training.coherence import CoherenceConfig, LagSums, TimedTexts, add_stream, analyze, unit_rows


class BagOfWords:
    """A transparent encoder for checking the analysis itself: hashed word counts."""

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        out = np.zeros((len(texts), 1024), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.split():
                out[row, zlib.crc32(word.encode()) % 1024] += 1
        return out + 1e-3


def test_lag_bins_match_a_brute_force_count() -> None:
    rng = np.random.default_rng(0)
    n = 120
    seconds = np.sort(rng.uniform(0, 400, n))
    viewers = [f"v{i}" for i in rng.integers(0, 6, n)]
    unit = unit_rows(rng.normal(size=(n, 8)))
    config = CoherenceConfig(edges=(0, 10, 60, 300), baseline_pairs=10)
    sums = LagSums(3)
    add_stream(sums, unit, seconds, viewers, config, rng)

    total, count = np.zeros(3), np.zeros(3, dtype=int)
    for i in range(n):
        for j in range(i + 1, n):
            lag = seconds[j] - seconds[i]
            if viewers[i] == viewers[j] or lag >= 300:
                continue
            k = 0 if lag < 10 else 1 if lag < 60 else 2
            total[k] += unit[i] @ unit[j]
            count[k] += 1
    np.testing.assert_array_equal(sums.count, count)
    np.testing.assert_allclose(sums.total, total, atol=1e-9)


def topic_stream(stream_id: str, seed: int) -> TimedTexts:
    """Every 2 minutes chat moves to a new topic: nearby messages share words, distant ones do not."""
    rng = random.Random(seed)
    topics = [[f"t{k}w{w}" for w in range(6)] for k in range(40)]
    texts, seconds, viewers = [], [], []
    for i in range(900):
        t = i * 4.0 + rng.random()
        topic = topics[int(t // 120) % len(topics)]
        texts.append(" ".join(rng.choice(topic) for _ in range(3)) + " " + rng.choice(["gg", "lol", "ja"]))
        seconds.append(t)
        viewers.append(f"v{rng.randrange(50)}")
    return TimedTexts(stream_id, texts, np.array(seconds), viewers)


def test_coherence_decays_towards_the_baseline_on_topic_structured_chat() -> None:
    result = analyze([topic_stream("a", 1), topic_stream("b", 2)], {"bow": BagOfWords()},
                     CoherenceConfig(baseline_min_lag=1800, max_messages=600))
    normalized = [b["bow_normalized"] for b in result["bins"]]
    assert result["n_messages"] == 1200 and all(b["n_pairs"] > 0 for b in result["bins"])
    assert normalized[0] > 2.0 > normalized[-1]
    assert normalized[0] > normalized[5] > normalized[-1]  # 0-5 s > 45-60 s > 240-300 s
    assert result["baseline"]["bow"]["n_pairs"] > 1000


def test_analyze_coherence_cli_writes_json_and_png(tmp_path: Path) -> None:
    from infra.cli import build_app

    tiny = tiny_checkpoint(tmp_path / "tiny")
    log = tmp_path / "chat" / "2022-05-01.txt"
    log.parent.mkdir()
    rng = random.Random(0)
    lines = [f"[{(i * 2) // 3600:02d}:{(i * 2) // 60 % 60:02d}:{(i * 2) % 60:02d}] <viewer{rng.randrange(30)}> "
             f"{rng.choice(['hallo', 'gg', 'boss', 'endlich'])} {rng.choice(['leute', 'chat', 'wieder'])}"
             for i in range(400)]
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")

    out = tmp_path / "report"
    result = CliRunner().invoke(build_app(), [
        "--state-dir", str(tmp_path / "state"), "analyze", "coherence", "--file", str(log),
        "--before", str(tiny), "--after", str(tiny), "--out", str(out), "--max-lag", "120",
    ])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "coherence.json").read_text())
    assert data["n_messages"] == 400 and data["bins"][-1]["hi"] == 120
    for row in data["bins"]:
        assert row["n_pairs"] > 0
        assert row["before"] == pytest.approx(row["after"])  # same encoder twice: same curve
    assert (out / "coherence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
