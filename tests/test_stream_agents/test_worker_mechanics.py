"""The worker process on real Tansu + PostgreSQL, with the scorer double as the model (fast)."""

from __future__ import annotations

import pytest

from infra.events import DeadLetter, DonorScore
from infra.settings import Settings
from infra.topics import DEAD_LETTERS, DONOR_SCORES
from tests.test_stream_agents.harness import MALFORMED, publish, read_topic, reference_sequences, synthetic_stream
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
