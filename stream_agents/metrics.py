"""What the worker counts, in Prometheus text (GET /metrics) and as a small JSON summary
(GET /metrics/summary, read by `donorcast status`).

Every record read from chat-messages ends in exactly one `donorcast_messages_total{outcome=...}` bucket:
sequenced (embedded and appended), duplicate (redelivered after a restart, already applied), paid
(an outcome, never a model input), not_input (system notices etc.) or dead_letter. Their sum equals
`donorcast_records_in_total`: the accounting the reliability drills check.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

OUTCOMES = ("sequenced", "duplicate", "paid", "not_input", "dead_letter")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    """One registry per app: two apps in one process (tests) never share counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.records_in = Counter("donorcast_records_in", "records read from chat-messages", registry=r)
        self.messages = Counter(
            "donorcast_messages", "records by what became of them", ["outcome"], registry=r
        )
        self.embedded = Counter("donorcast_embedded_messages", "messages embedded (incl. re-embedding)", registry=r)
        self.scored = Counter("donorcast_scores_published", "scores published to donor-scores", registry=r)
        self.refetched = Counter(
            "donorcast_refetched_records", "records the consumer skipped, read directly (gaps.py)", registry=r
        )
        self.resumed = Counter(
            "donorcast_caught_up_partitions", "stalled partitions whose records were read directly", registry=r
        )
        self.lost = Counter("donorcast_lost_records", "skipped records that could not be read any more", registry=r)
        self.misrouted = Counter(
            "donorcast_misrouted", "records whose Kafka key was not stream|viewer", registry=r
        )
        self.batch_size = Histogram(
            "donorcast_batch_size", "records per micro-batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.embed_seconds = Histogram("donorcast_embed_seconds", "encoder time per micro-batch", registry=r)
        self.score_seconds = Histogram("donorcast_score_seconds", "classifier time per micro-batch", registry=r)
        self.latency = Histogram(
            "donorcast_end_to_end_latency_seconds",
            "producer send -> score acknowledged by the broker",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.lag = Gauge("donorcast_consumer_lag", "chat-messages records not yet processed", ["partition"], registry=r)
        self.viewers = Gauge("donorcast_active_viewers", "viewer sequences held by this worker", registry=r)
        self.degraded = Gauge("donorcast_degraded", "1 while a dependency is failing", ["component"], registry=r)
        self.rows_written = Counter("donorcast_postgres_rows", "new rows written", ["table"], registry=r)
        self.sink_retries = Counter("donorcast_postgres_retries", "failed PostgreSQL writes retried", registry=r)
        self.refused_rows = Counter("donorcast_postgres_refused_rows", "rows PostgreSQL refused (dead-lettered)",
                                    ["table"], registry=r)
        # An embedded broker that restarted with empty storage (stream_agents/recovery/broker_reset.py).
        self.broker_resets = Counter("donorcast_broker_resets", "broker restarts with empty storage noticed", registry=r)
        self.lost_on_reset = Counter(
            "donorcast_lost_on_broker_reset",
            "chat-messages records the old broker held that were not applied (scoring) or written (storage)",
            ["consumer"], registry=r)
        for consumer in ("scoring", "storage"):
            self.lost_on_reset.labels(consumer)
        self.model_swaps = Counter("donorcast_model_loads", "model versions loaded", registry=r)
        self.expired = Counter("donorcast_expired_viewers", "viewer sequences expired", ["reason"], registry=r)
        self._model_info = Gauge("donorcast_model", "the model version in use", ["version"], registry=r)
        for outcome in OUTCOMES:
            self.messages.labels(outcome)
        for component in ("postgres", "model"):
            self.degraded.labels(component).set(0)
        self.recent_latencies: deque[float] = deque(maxlen=20_000)
        self.started_at = time.time()
        self.model_version: str | None = None

    def count(self, outcome: str, n: int = 1) -> None:
        if n:
            self.messages.labels(outcome).inc(n)

    def observe_latency(self, seconds: float) -> None:
        self.latency.observe(seconds)
        self.recent_latencies.append(seconds)

    def set_model(self, version: str) -> None:
        self._model_info.clear()
        self._model_info.labels(version).set(1)
        self.model_version = version
        self.model_swaps.inc()

    def set_degraded(self, component: str, degraded: bool) -> None:
        self.degraded.labels(component).set(1 if degraded else 0)

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def values(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample once: (name, sorted labels) -> value (one pass over the registry)."""
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in self.registry.collect() for s in family.samples
        }

    def is_degraded(self, component: str) -> bool:
        return bool(self.value("donorcast_degraded", component=component))

    def prometheus_text(self) -> bytes:
        return generate_latest(self.registry)

    def summary(self) -> dict[str, object]:
        values = self.values()

        def get(name: str, **labels: str) -> int:
            return int(values.get((name, tuple(sorted(labels.items()))), 0))

        latencies = np.asarray(self.recent_latencies, dtype=np.float64)
        return {
            "model_version": self.model_version,
            "uptime_s": round(time.time() - self.started_at, 1),
            "records_in": get("donorcast_records_in_total"),
            "messages": {o: get("donorcast_messages_total", outcome=o) for o in OUTCOMES},
            "embedded": get("donorcast_embedded_messages_total"),
            "scores_published": get("donorcast_scores_published_total"),
            "viewers": get("donorcast_active_viewers"),
            "lag": int(sum(v for (name, _), v in values.items() if name == "donorcast_consumer_lag")),
            "latency_ms": _percentiles_ms(latencies),
            "degraded": {c: bool(get("donorcast_degraded", component=c)) for c in ("postgres", "model")},
            "postgres_refused_rows": int(sum(v for (name, _), v in values.items()
                                             if name == "donorcast_postgres_refused_rows_total")),
            "broker_resets": get("donorcast_broker_resets_total"),
            "lost_on_broker_reset": get("donorcast_lost_on_broker_reset_total", consumer="scoring"),
            "lost_on_broker_reset_storage": get("donorcast_lost_on_broker_reset_total", consumer="storage"),
        }


def _percentiles_ms(latencies: np.ndarray) -> dict[str, float | None]:
    if latencies.size == 0:
        return {"p50": None, "p90": None, "p99": None, "n": 0}
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99]) * 1000
    return {"p50": round(float(p50), 1), "p90": round(float(p90), 1), "p99": round(float(p99), 1),
            "n": int(latencies.size)}
