"""Viewer history features (past streams, paid events, membership) for models that use them.

Read from PostgreSQL once per viewer per stream, strictly before the stream's origin and outside the
stream itself, so a viewer's own payment in this stream only ever counts for later streams. Cached
in a bounded LRU; a failed query is not cached (the viewer is scored without history meanwhile and
the lookup is retried on their next message).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable
from datetime import UTC, datetime

from infra.repository import ViewerHistory, viewer_histories

log = logging.getLogger(__name__)

CacheKey = tuple[str, str]  # (stream_id, viewer_id)


class HistoryCache:
    def __init__(self, maxsize: int = 200_000) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[CacheKey, ViewerHistory] = OrderedDict()
        self.failed = False  # the last lookup failed (PostgreSQL down)

    def get(self, key: CacheKey) -> ViewerHistory | None:
        history = self._items.get(key)
        if history is not None:
            self._items.move_to_end(key)
        return history

    def put(self, key: CacheKey, history: ViewerHistory) -> None:
        self._items[key] = history
        self._items.move_to_end(key)
        while len(self._items) > self.maxsize:
            self._items.popitem(last=False)

    def forget_stream(self, stream_id: str) -> None:
        for key in [k for k in self._items if k[0] == stream_id]:
            del self._items[key]

    def __len__(self) -> int:
        return len(self._items)

    async def lookup(
        self, pool: object, wanted: Iterable[tuple[str, str, float]]
    ) -> dict[CacheKey, ViewerHistory | None]:
        """(stream_id, viewer_id, stream origin as unix seconds) -> history; one query per stream."""
        found: dict[CacheKey, ViewerHistory | None] = {}
        missing: dict[tuple[str, float], list[str]] = {}
        for stream_id, viewer_id, origin in wanted:
            cached = self.get((stream_id, viewer_id))
            if cached is not None:
                found[(stream_id, viewer_id)] = cached
            else:
                missing.setdefault((stream_id, origin), []).append(viewer_id)
        for (stream_id, origin), viewer_ids in missing.items():
            before = datetime.fromtimestamp(origin, UTC)
            try:
                rows = await viewer_histories(pool, viewer_ids, before=before, exclude_stream=stream_id)  # type: ignore[arg-type]
            except Exception as error:  # noqa: BLE001 - PostgreSQL down: score without history for now
                if not self.failed:
                    log.warning("viewer history unavailable (%s: %s); scoring without it", type(error).__name__, error)
                self.failed = True
                found.update({(stream_id, v): None for v in viewer_ids})
                continue
            self.failed = False
            for viewer_id in viewer_ids:
                self.put((stream_id, viewer_id), rows[viewer_id])
                found[(stream_id, viewer_id)] = rows[viewer_id]
        return found
