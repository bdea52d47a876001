"""Worker drills on the real worker process, real Tansu and real PostgreSQL. Each ends with the
accounting in worker_support.account: every produced message is stored once and counted into its
viewer's score, or dead-lettered with a reason, and nothing else exists.

kill -9 mid-replay and restart is already drilled, with exactly this accounting, by
tests/test_stream_agents/test_worker_restart.py::test_kill9_mid_replay_recovers_sequences_exactly;
it is not repeated here.
"""

from __future__ import annotations

import time
from pathlib import Path

import asyncpg
import pytest

from infra.kafka import free_port
from infra.settings import Settings
from tests.test_drills.worker_support import account, sequences
from tests.test_stream_agents.harness import (
    MALFORMED,
    BackgroundPublisher,
    reference_sequences,
    start_worker,
    synthetic_stream,
)
from tests.test_stream_agents.scorer_double import promote_double

pytestmark = pytest.mark.slow


async def test_two_workers_one_killed_its_partitions_move_and_nothing_is_lost(
    topics: Settings, tmp_path: Path, pool: asyncpg.Pool
) -> None:
    settings = topics.model_copy(update={"sequence_length": 8})  # short rings: slots reused across the failover
    promote_double(settings.registry_dir)
    messages = synthetic_stream("s1", viewers=60, messages=1200, donors=8, seed=21)
    messages += synthetic_stream("s2", viewers=30, messages=400, donors=4, seed=22)
    port = free_port()
    a = start_worker(settings, port, tmp_path / "a.log", model_double=True)
    b = start_worker(settings, port + 1, tmp_path / "b.log", model_double=True)
    try:
        a.wait_ready(90)
        b.wait_ready(90)
        with BackgroundPublisher(settings, messages, rate=400, raw=MALFORMED):
            # both hold partitions and are working before B dies
            a.wait_until(lambda s: s["records_in"] > 50, 60, "worker A to process", poll=0.2)
            b.wait_until(lambda s: s["records_in"] > 50, 60, "worker B to process", poll=0.2)
            b_viewers = set(sequences(b, "s1"))  # viewers on B's partitions (A does not answer for them)
            assert b_viewers and not b_viewers & set(sequences(a, "s1"))
            b_done = b.summary()["records_in"]
            b.kill9()
            killed_at = time.monotonic()
            a.wait_until(lambda _: b_viewers <= set(sequences(a, "s1")), 90, "A to take over B's partitions",
                         poll=0.2)
            took_over = time.monotonic() - killed_at
        total = len(messages) + len(MALFORMED)
        summary = a.wait_until(lambda s: s["records_in"] >= total - b_done and s["lag"] == 0, 120,
                               "A to process everything B left")
        # A now owns every partition: it answers for every viewer, with B's sequences rebuilt exactly.
        reference = reference_sequences(messages, settings.sequence_length)
        for stream in ("s1", "s2"):
            expected = {v: ids for (s, v), ids in reference.items() if s == stream}
            a.wait_until(lambda _, stream=stream, expected=expected: sequences(a, stream) == expected, 60,
                         f"A's sequences of {stream} to match the reference")
        result = await account(settings, pool, messages, MALFORMED)
        print(f"\nB processed {b_done} records, was killed; A held B's {len(b_viewers)} viewers after "
              f"{took_over:.1f} s (rebalance + changelog recovery) and processed "
              f"{summary['records_in']} ({summary['messages']['duplicate']} redelivered duplicates)\n{result.line()}")
        assert summary["records_in"] + b_done >= total  # redelivery may repeat, never skip
    finally:
        a.stop()
        b.stop()
