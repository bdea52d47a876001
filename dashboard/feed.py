"""The live feed: one shared refresh per (stream, k), fanned out to Server-Sent-Events clients."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from dashboard.data import DashboardData, degraded
from dashboard.queries import QueryRejected
from infra.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

SUMMARY_SECONDS = 3.0  # the feed refreshes the (heavier) summary this often


@dataclass
class _Channel:
    queues: set[asyncio.Queue[dict[str, Any] | None]] = field(default_factory=set)
    task: asyncio.Task[None] | None = None
    summary: dict[str, Any] | None = None
    summary_at: float = 0.0
    problem: str | None = None  # the last unexpected failure, logged once


class LiveFeed:
    """One snapshot loop per (stream, k) that has subscribers, however many pages watch it; each
    subscriber holds only the newest snapshot (a slow browser skips, it never queues up)."""

    def __init__(self, data: DashboardData, interval: float = 1.0) -> None:
        self.data = data
        self.interval = interval
        self.channels: dict[tuple[str, int], _Channel] = {}

    async def subscribe(self, stream_id: str, k: int) -> AsyncIterator[dict[str, Any]]:
        key = (stream_id, k)
        channel = self.channels.setdefault(key, _Channel())
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=1)
        channel.queues.add(queue)
        if channel.task is None:
            channel.task = asyncio.create_task(self._run(key, channel))
        try:
            while (snapshot := await queue.get()) is not None:
                yield snapshot
        finally:
            channel.queues.discard(queue)
            if not channel.queues and self.channels.get(key) is channel:
                del self.channels[key]
                if channel.task is not None:
                    channel.task.cancel()

    async def _run(self, key: tuple[str, int], channel: _Channel) -> None:
        stream_id, k = key
        while True:
            snapshot = await self.build(stream_id, k, channel)
            for queue in list(channel.queues):
                if queue.full():
                    queue.get_nowait()
                queue.put_nowait(snapshot)
            await asyncio.sleep(self.interval)

    async def build(self, stream_id: str, k: int, channel: _Channel) -> dict[str, Any]:
        try:
            if channel.summary is None or time.monotonic() - channel.summary_at > SUMMARY_SECONDS:
                channel.summary = await self.data.summary(stream_id, k)
                channel.summary_at = time.monotonic()
            return await self.data.snapshot(stream_id, k, summary=channel.summary or {})
        except DatabaseUnavailable as error:
            return degraded(stream_id, k, str(error))
        except QueryRejected as error:  # Database.run logged it once; every second again would be noise
            return degraded(stream_id, k, str(error))
        except Exception as error:  # noqa: BLE001 - the feed outlives one bad query; the page shows why
            problem = f"{type(error).__name__}: {error}"
            if problem != channel.problem:  # a traceback once per new failure, not once a second
                log.exception("dashboard snapshot of %r failed", stream_id[:200])
            channel.problem = problem
            return degraded(stream_id, k, problem)

    def close(self) -> None:
        """Stop every loop and end every subscription (the server is stopping)."""
        for channel in self.channels.values():
            if channel.task is not None:
                channel.task.cancel()
            for queue in channel.queues:
                if queue.full():
                    queue.get_nowait()
                queue.put_nowait(None)
        self.channels.clear()
