"""The worker process on real Tansu + PostgreSQL, with the scorer double as the model (fast)."""

from __future__ import annotations

from infra.events import DeadLetter, DonorScore
from infra.settings import Settings
from infra.topics import DEAD_LETTERS, DONOR_SCORES
from tests.test_stream_agents.harness import (
    MALFORMED,
    publish,
    read_topic,
    reference_sequences,
    synthetic_stream,
)
from tests.test_stream_agents.scorer_double import promote_double


async def test_worker_scores_every_viewer_and_dead_letters_bad_records(topics: Settings, worker_factory, pool) -> None:
    promote_double(topics.registry_dir)
    messages = synthetic_stream("s1", viewers=40, messages=400, donors=5)
    worker = worker_factory()
    worker.wait_ready()
    await publish(topics, messages, raw=MALFORMED)
    total = len(messages) + len(MALFORMED)
    summary = worker.wait_until(lambda s: s["records_in"] >= total, 60, "all records processed")
    print(summary)
    reference = reference_sequences(messages, topics.sequence_length)
    held = worker.get("/streams/s1/sequences")
    assert {v: h["message_ids"] for v, h in held.items() if h["message_ids"]} == {v: ids for (s, v), ids in reference.items()}
    letters = [DeadLetter.model_validate_json(r.value) for r in await read_topic(topics, DEAD_LETTERS, expect=len(MALFORMED))]
    assert len(letters) == len(MALFORMED)
    scores = [DonorScore.model_validate_json(r.value) for r in await read_topic(topics, DONOR_SCORES)]
    assert {s.viewer_id for s in scores} == {v for (_, v) in reference}


async def test_http_endpoints_metrics_and_scoring(topics: Settings, worker_factory) -> None:
    promote_double(topics.registry_dir)
    worker = worker_factory()
    worker.wait_ready()
    assert worker.get("/healthz")["status"] == "ok"

    status, answer = worker.post("/score", {"messages": [
        {"text": "hello chat", "timestamp": "2026-03-01T18:00:00Z"},
        {"text": "love this stream", "timestamp": "2026-03-01T18:01:00Z", "message_id": "warm"},
    ]})
    assert status == 200 and 0 < answer["probability"] < 1 and answer["n_messages"] == 2
    assert answer["top_message_ids"][0] == "warm" and answer["top_messages"][0]["text"] == "love this stream"
    cold_status, cold = worker.post("/score", {"messages": [{"text": "hello chat", "timestamp": "2026-03-01T18:00:00Z"}]})
    assert cold_status == 200 and cold["probability"] < answer["probability"]
    bad_status, bad = worker.post("/score", {"messages": [{"text": "no time"}]})
    assert bad_status == 400 and "timestamp" in bad["error"]

    await publish(topics, synthetic_stream("s9", viewers=5, messages=40, donors=1), raw=MALFORMED[:1])
    worker.wait_until(lambda s: s["records_in"] >= 42, 60, "the records")
    text = worker.get("/metrics")
    assert 'donorcast_messages_total{outcome="dead_letter"} 1.0' in text
    assert "donorcast_end_to_end_latency_seconds_bucket" in text and 'donorcast_degraded{component="postgres"} 0.0' in text
    streams = worker.get("/streams")
    assert [s["stream_id"] for s in streams] == ["s9"] and streams[0]["viewers"] == 5
    top = worker.get("/streams/s9/leaderboard?k=3")
    assert [e["rank"] for e in top] == [1, 2, 3] and top[0]["probability"] >= top[-1]["probability"]
    assert len(worker.get("/streams/s9/outcomes")) == 1  # the donor's payment, with the rank before it


async def test_history_features_come_from_earlier_streams_only(topics: Settings, worker_factory, pool) -> None:
    from datetime import UTC, datetime, timedelta

    from infra.events import ChatMessage, MessageKind
    from infra.repository import save_messages

    promote_double(topics.registry_dir, use_history=True)
    start = datetime(2026, 3, 10, 18, tzinfo=UTC)
    past = ChatMessage(stream_id="old", message_id="old-1", timestamp=start - timedelta(days=3), author_id="UCA",
                       author_name="a", kind=MessageKind.PAID_MESSAGE, amount=20.0, currency="USD", text="")
    await save_messages(pool, [past])

    def say(viewer: str, i: int, text: str, **kw: object) -> ChatMessage:
        return ChatMessage(stream_id="new", message_id=f"{viewer}-{i}", timestamp=start + timedelta(seconds=i),
                           offset_seconds=float(i), author_id=viewer, author_name=viewer, text=text, **kw)

    messages = [say(v, i, t) for i, t in enumerate(["hi", "gg", "nice"]) for v in ("UCA", "UCB", "UCC")]
    # C pays in this stream: it must not count as C's history here (only for later streams).
    messages.insert(3, say("UCC", 99, "", kind=MessageKind.PAID_MESSAGE, amount=5.0, currency="USD"))
    worker = worker_factory()
    worker.wait_ready()
    await publish(topics, messages)
    worker.wait_until(lambda s: s["records_in"] >= len(messages), 60, "the records")
    board = {e["viewer_id"]: e["probability"] for e in worker.get("/streams/new/leaderboard?k=10")}
    assert board["UCA"] > board["UCB"]  # A paid in an earlier stream
    assert board["UCC"] == board["UCB"]  # C's payment in this stream is not a feature of this stream
