"""Where training and evaluation streams come from: chat files, the simulator or PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:

    from infra.settings import Settings

from training.build_dataset import StreamData


def channel_group(path: Path) -> str:
    """Split group (channel) of a chat file from the layouts we know: `<channel>/history/<video>.json`
    (HundredBeans) and `rbtv-*` folders; other files share one group."""
    parts = path.parts
    if "history" in parts and parts.index("history") > 0:
        return parts[parts.index("history") - 1]
    return "rbtv" if any("rbtv" in p.lower() for p in parts) else ""


def load_streams(settings: Settings, *, files: Sequence[Path] = (), simulate: int = 0, seed: int = 7,
                 preset: str = "mixed") -> list[StreamData]:
    """Streams from chat files, from the simulator, or (neither given) from PostgreSQL."""
    from training.build_dataset import streams_from_database, streams_from_files, streams_from_simulator

    if files:
        return list(streams_from_files(files, group_of=channel_group))
    if simulate:
        return streams_from_simulator(simulate, seed, preset=preset)
    import asyncio

    from infra.postgres import create_pool
    from infra.services import running_services

    with running_services(settings, kafka=False) as endpoints:
        async def _load() -> list[StreamData]:
            pool = await create_pool(endpoints.database_url)  # type: ignore[arg-type]
            try:
                return await streams_from_database(pool)
            finally:
                await pool.close()

        return asyncio.run(_load())
