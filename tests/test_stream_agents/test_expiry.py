"""Idle viewers and ended streams are forgotten: their rows leave both tables and the leaderboard."""

from __future__ import annotations

import numpy as np

from infra.settings import load_settings
from stream_agents.metrics import Metrics
from stream_agents.pipeline import Runtime, expire_idle, expire_stream, rebuild_boards
from stream_agents.sequences import SequenceStore, ViewerSequence, append


def runtime(tmp_path, idle_seconds: float = 100.0) -> Runtime:
    async def ignore(_: object) -> None:
        return None

    settings = load_settings(state_dir=tmp_path, viewer_idle_seconds=idle_seconds)
    return Runtime(settings=settings, store=SequenceStore({}, {}, capacity=2), models=None, metrics=Metrics(),  # type: ignore[arg-type]
                   send_score=ignore, send_dead_letter=ignore)


def add_viewer(rt: Runtime, key: str, *, last_time: float, updated_at: float, n: int = 3) -> None:
    header, window = ViewerSequence(capacity=2), []
    for i in range(n):
        stored = append(header, window, message_id=f"{key}-{i}", timestamp=last_time - n + 1 + i, since_start=i,
                        text="t", embedding=np.zeros(4), offset=i, now=updated_at)
        rt.store.write_message(key, header, stored)
    header.probability = 0.5
    rt.store.save(key, header)


def test_idle_viewers_expire_by_stream_time_and_by_wall_time(tmp_path) -> None:
    rt = runtime(tmp_path)
    add_viewer(rt, "s|quiet", last_time=1_000, updated_at=5_000)  # 150 s behind the stream's clock
    add_viewer(rt, "s|active", last_time=1_150, updated_at=5_000)
    add_viewer(rt, "t|gone", last_time=1_150, updated_at=4_800)  # stream t stopped sending 210 s ago
    add_viewer(rt, "u|elsewhere", last_time=1_000, updated_at=4_800)
    rt.owns = lambda key: not key.startswith("u|")  # a partition another worker holds: never touched
    rebuild_boards(rt)
    assert expire_idle(rt, now=5_010) == 2
    assert sorted(rt.store.headers) == ["s|active", "u|elsewhere"]
    assert all(not key.startswith(("s|quiet", "t|gone")) for key in rt.store.slots)
    assert rt.boards.rank("s|active") == 1 and "t" not in rt.boards.streams
    assert rt.metrics.value("donorcast_expired_viewers_total", reason="idle") == 2


def test_an_ended_stream_is_forgotten_at_once(tmp_path) -> None:
    rt = runtime(tmp_path)
    for viewer in ("a", "b"):
        add_viewer(rt, f"s|{viewer}", last_time=1_000, updated_at=5_000)
    add_viewer(rt, "other|a", last_time=1_000, updated_at=5_000)
    rebuild_boards(rt)
    assert expire_stream(rt, "s", reason="stream_end") == 2
    assert list(rt.store.headers) == ["other|a"] and len(rt.store.slots) == 2
    assert rt.metrics.summary()["viewers"] == 1
