"""The pipeline benchmark end to end at a tiny size, on the session's real Tansu and PostgreSQL: a
real worker process scores every replayed message, the sink persists them, latency is measured."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.settings import Settings
from tests.test_bench.conftest import MACHINE_KEYS, strict_json


@pytest.mark.slow
def test_pipeline_bench_scores_and_persists_every_message(settings: Settings, tiny_model: Path, tmp_path: Path) -> None:
    from bench.pipeline import PipelineBenchConfig, run

    out = tmp_path / "pipeline.json"
    config = PipelineBenchConfig(messages=2000, workers=(1,), rate=40, rate_seconds=3, source="simulator",
                                 start_timeout=180, stall_timeout=60)
    run(config, settings.model_copy(update={"base_model": tiny_model}), out, use_state_dir_as_is=True)
    result = strict_json(out)
    assert MACHINE_KEYS <= set(result["machine"])
    (run_,) = result["runs"]
    throughput, latency = run_["throughput"], run_["latency"]
    assert throughput["completed"] and throughput["processed"] == 2000
    assert throughput["postgres_rows"]["chat_messages"] == 2000  # warm-up rows are not counted
    assert 0 < throughput["scores_published"] <= 2000
    assert throughput["end_to_end_msgs_per_s"] > 0 and throughput["cpu_seconds"]["worker 0"] > 0
    assert latency["messages"] == 120 and latency["scores_read"] > 0
    assert latency["processed_by_end"] == 120
    assert 0 <= latency["backlog_at_offer_end"] <= 120
    assert latency["overloaded"] == (latency["backlog_at_offer_end"] > 2 * 40)
    p = latency["latency_ms"]
    assert 0 < p["p50"] <= p["p95"] <= p["p99"] <= p["max"]
    assert [t["name"] for t in result["targets"]] == [
        "pipeline sustained throughput, 1 worker(s)", "pipeline p99 produce->score at 40 msgs/s offered, 1 worker(s)"]
