"""kill -9 in the middle of a replay, restart: sequences recovered exactly, nothing lost, nothing doubled."""

from __future__ import annotations

import time

import pytest

from infra.events import DonorScore
from infra.settings import Settings
from infra.topics import DONOR_SCORES
from tests.test_stream_agents.harness import (
    BackgroundPublisher,
    postgres_state,
    read_topic,
    reference_sequences,
    score_key,
    synthetic_stream,
)
from tests.test_stream_agents.scorer_double import promote_double

pytestmark = pytest.mark.slow


@pytest.fixture
def short_sequences(topics: Settings) -> Settings:
    # A short ring so that eviction and slot reuse happen many times before and after the crash.
    return topics.model_copy(update={"sequence_length": 6})


async def test_kill9_mid_replay_recovers_sequences_exactly(short_sequences: Settings, tmp_path, pool) -> None:
    from infra.kafka import free_port
    from tests.test_stream_agents.harness import start_worker

    settings = short_sequences
    promote_double(settings.registry_dir)
    messages = synthetic_stream("s1", viewers=60, messages=1500, donors=8, seed=3)
    messages += synthetic_stream("s2", viewers=30, messages=500, donors=4, seed=4)
    reference = reference_sequences(messages, settings.sequence_length)
    port = free_port()
    worker = start_worker(settings, port, tmp_path / "first.log", model_double=True)
    second = None
    try:
        worker.wait_ready()
        with BackgroundPublisher(settings, messages, rate=500):
            worker.wait_until(lambda s: s["records_in"] >= 500, 60, "a third of the replay", poll=0.1)
            worker.kill9()
            restarted_at = time.monotonic()
            second = start_worker(settings, port, tmp_path / "second.log", model_double=True)
            second.wait_until(lambda s: s["records_in"] > 0, 90, "the restarted worker to process", poll=0.2)
            resumed_after = time.monotonic() - restarted_at
        for stream in ("s1", "s2"):
            expected = {v: ids for (s, v), ids in reference.items() if s == stream}
            second.wait_until(
                lambda s, stream=stream, expected=expected: {
                    v: h["message_ids"] for v, h in second.get(f"/streams/{stream}/sequences").items()
                } == expected,
                90, f"the sequences of {stream} to match the reference",
            )
        summary = second.summary()
        print(f"\nrestart -> processing again: {resumed_after:.1f} s; second worker: {summary}")
        assert summary["messages"]["duplicate"] > 0  # it did re-read what the first had not committed

        valid = {m.message_id for m in messages}
        final_counts = {k: sum(1 for m in messages if (m.stream_id, m.viewer_id) == k and m.is_model_input)
                        for k in reference}
        db = second.wait_until(lambda s: s["postgres_rows"]["chat_messages"] >= 0, 5, "summary")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until every viewer's newest stored score saw all its messages
            state = await postgres_state(pool)
            if state["messages"] == len(valid) and state["latest"] == final_counts:
                break
            time.sleep(0.5)
        assert state["messages"] == state["distinct_messages"] == len(valid)  # no loss, no duplicate rows
        assert state["latest"] == final_counts
        topic_scores = [DonorScore.model_validate_json(r.value) for r in await read_topic(settings, DONOR_SCORES)]
        assert {score_key(s) for s in topic_scores} == state["score_keys"]
        assert state["scores"] == len(state["score_keys"])
        del db
    finally:
        worker.stop()
        if second is not None:
            second.stop()
