"""Correct faust's view of partition high watermarks when the broker is Tansu 0.6.0.

Tansu's ListOffsets(LATEST) answers "base offset of the last record batch + 1" instead of "last
offset + 1" whenever that batch holds more than one record. Faust reads changelog topics up to
that (wrong) high watermark during recovery, so tables came back missing the tail of the last
batch after a restart (1 of 7 restarts correct without this fix, 17 of 17 with it).

Fetch responses do carry the correct high watermark, so for every non-empty partition we fetch
from `end - 1` with a throw-away consumer and take the watermark the broker reports. This
replaces the private `AIOKafkaConsumerThread._highwaters` of faust-streaming 0.15.3 (pinned in
pyproject.toml); tests/test_infra/test_faust_recovery.py fails if an upgrade breaks it.
Only applied when talking to the embedded broker: real Kafka answers ListOffsets correctly.

Second, Tansu answers a waiting fetch only at its deadline, which faust hard-codes to 1500 ms:
a live message then waits ~0.4 s on average before the worker sees it (p50 374 ms at 1500 ms vs
4 ms at 100 ms, measured with plain aiokafka). The worker's consumer gets a 100 ms deadline.
"""

from __future__ import annotations

import asyncio
from typing import Any

PROBE_TIMEOUT_SECONDS = 15.0
FETCH_MAX_WAIT_MS = 100


async def _true_highwaters(self: Any, partitions: Any) -> dict[Any, int]:
    import aiokafka

    consumer = self._ensure_consumer()  # the aiokafka consumer; self.consumer is faust's own
    if self.consumer.in_transaction:
        return {tp: consumer.last_stable_offset(tp) for tp in partitions}
    ends = dict(await consumer.end_offsets(partitions))
    nonempty = [tp for tp in partitions if ends.get(tp)]
    if not nonempty:
        return ends
    probe = aiokafka.AIOKafkaConsumer(
        bootstrap_servers=consumer._client._bootstrap_servers, enable_auto_commit=False, group_id=None
    )
    await probe.start()
    try:
        by_tp = {tp: aiokafka.TopicPartition(tp.topic, tp.partition) for tp in nonempty}
        probe.assign(list(by_tp.values()))
        for tp, atp in by_tp.items():
            probe.seek(atp, ends[tp] - 1)
        pending = set(nonempty)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PROBE_TIMEOUT_SECONDS
        while pending and loop.time() < deadline:
            await probe.getmany(timeout_ms=200)
            for tp in list(pending):
                highwater = probe.highwater(by_tp[tp])
                if highwater is not None:
                    ends[tp] = max(ends[tp], highwater)
                    pending.discard(tp)
        return ends
    finally:
        await probe.stop()


def install() -> None:
    """Patch faust (idempotent); call before the app starts."""
    from faust.transport.drivers import aiokafka as faust_aiokafka

    thread = faust_aiokafka.AIOKafkaConsumerThread
    thread._highwaters = _true_highwaters
    if not getattr(thread._create_worker_consumer, "_tansu_short_fetch", False):
        original = thread._create_worker_consumer

        def _create_worker_consumer(self: Any, transport: Any) -> Any:
            consumer = original(self, transport)
            consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by consumer.start()
            return consumer

        _create_worker_consumer._tansu_short_fetch = True  # type: ignore[attr-defined]
        thread._create_worker_consumer = _create_worker_consumer


def is_installed() -> bool:
    from faust.transport.drivers import aiokafka as faust_aiokafka

    return faust_aiokafka.AIOKafkaConsumerThread._highwaters is _true_highwaters
