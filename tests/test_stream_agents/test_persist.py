"""The PostgreSQL sink's pure parts: decoding a fetched batch, and the capped back-off."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from aiokafka import TopicPartition

from infra.events import ChatMessage, DonorScore
from stream_agents.persist import backoff, decode_batch


def test_a_batch_is_split_by_topic_and_remembers_where_to_commit() -> None:
    chat, scores = TopicPartition("chat", 0), TopicPartition("scores", 1)
    message = ChatMessage(stream_id="s", message_id="m", timestamp=datetime(2026, 3, 1, tzinfo=UTC), author_id="a")
    score = DonorScore(stream_id="s", viewer_id="a", probability=0.4, n_messages=1, model_version="v",
                       event_time=datetime(2026, 3, 1, tzinfo=UTC), scored_at=datetime(2026, 3, 1, tzinfo=UTC))
    records = {
        chat: [SimpleNamespace(value=message.model_dump_json().encode(), offset=7),
               SimpleNamespace(value=b"broken", offset=8)],
        scores: [SimpleNamespace(value=score.model_dump_json().encode(), offset=3)],
    }
    batch = decode_batch(records, chat_topic="chat")
    assert [m.message_id for m in batch.messages] == ["m"] and [s.viewer_id for s in batch.scores] == ["a"]
    assert batch.skipped == 1  # the agent dead-letters it; the sink only skips it
    assert batch.offsets == {chat: 9, scores: 4}


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff(a, initial=0.2, cap=5.0) for a in range(7)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]


def test_connection_state_errors_after_a_crash_are_unavailability_not_a_stop() -> None:
    """The postmaster kill -9 drill stopped the sink once on asyncpg's "another operation is in progress"
    (the pool reconnecting the connection our write held): that is the way to the server being broken, so
    it is retried on a fresh pool; other client-side errors and refused rows are not."""
    import asyncpg
    from asyncpg.exceptions import _base as asyncpg_base

    from stream_agents.persist import is_unavailable

    assert is_unavailable(asyncpg_base.InternalClientError("cannot switch to state 15; another operation (2) is in progress"))
    assert is_unavailable(asyncpg.InterfaceError("connection is closed"))
    assert is_unavailable(ConnectionRefusedError(111, "Connection refused"))
    assert not is_unavailable(asyncpg_base.InternalClientError("unexpected codec state"))
    assert not is_unavailable(asyncpg.DataError("value out of range"))
