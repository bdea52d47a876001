"""Pure functions of the viewer sequences: packing, the ring, dedupe, expiry."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.scorer import seconds_since_start
from stream_agents.sequences import (
    SequenceStore,
    StoredMessage,
    ViewerSequence,
    append,
    is_duplicate,
    is_idle,
    slot_key,
    split_viewer_key,
    viewer_key_of_slot,
)

DIM = 384


def _append(header: ViewerSequence, window: list, i: int, *, offset: int | None = None, at: float = 0.0):
    vector = np.full(DIM, i / 10, dtype=np.float32)
    return append(header, window, message_id=f"m{i}", timestamp=1_700_000_000 + i, since_start=float(i),
                  text=f"text {i}", embedding=vector, offset=i if offset is None else offset, now=at)


def test_stored_message_is_float16_bytes_and_round_trips() -> None:
    vector = np.linspace(-1, 1, DIM).astype(np.float32)
    stored = StoredMessage("id-é", 7, 1_700_000_123.25, 12.5, "héllo <b>", vector.astype(np.float16))
    data = stored.to_bytes()
    assert len(data) < DIM * 2 + 64  # 2 bytes a dimension plus a small header: no JSON floats
    with pytest.raises(ValueError):
        json.loads(data)
    back = StoredMessage.from_bytes(data)
    assert (back.message_id, back.number, back.timestamp, back.seconds_since_start, back.text) == (
        "id-é", 7, 1_700_000_123.25, 12.5, "héllo <b>")
    assert back.embedding.dtype == np.float16
    np.testing.assert_allclose(back.embedding, vector, atol=1e-3)


def test_ring_keeps_the_last_n_and_remembers_the_gap_before_the_window() -> None:
    header, window = ViewerSequence(capacity=3), []
    for i in range(5):
        _append(header, window, i)
    assert [m.message_id for m in window] == ["m2", "m3", "m4"]
    assert header.count == 5 and list(header.numbers()) == [3, 4, 5]
    assert header.previous_seconds == 1.0  # m1 left the window last
    assert header.last_offset == 4 and header.first_time == 1_700_000_000 and header.last_time == 1_700_000_004


def test_store_reads_the_window_back_in_order_across_the_wrap() -> None:
    headers, slots = {}, {}
    store = SequenceStore(headers, slots, capacity=4)
    key = "s1|UCviewer|with|bars"
    header, window = store.header_or_new(key), []
    for i in range(10):
        store.write_message(key, header, _append(header, window, i))
    store.save(key, header)
    assert len(slots) == 4  # a ring: one row per slot, rewritten in place
    again = store.header(key)
    assert again is not None and again.count == 10
    assert [m.message_id for m in store.window(key, again)] == ["m6", "m7", "m8", "m9"]
    store.delete(key)
    assert headers == {} and slots == {}


def test_a_slot_left_by_a_crash_after_the_header_is_not_misread() -> None:
    headers, slots = {}, {}
    store = SequenceStore(headers, slots, capacity=3)
    header, window = store.header_or_new("k"), []
    for i in range(3):
        store.write_message("k", header, _append(header, window, i))
    store.save("k", header)
    ahead = ViewerSequence.from_bytes(header.to_bytes())
    store.write_message("k", ahead, _append(ahead, list(window), 3))  # slot of m0 overwritten, header not saved
    assert [m.message_id for m in store.window("k", store.header("k"))] == ["m1", "m2"]


def test_duplicates_by_offset_or_by_message_id() -> None:
    header, window = ViewerSequence(capacity=4), []
    _append(header, window, 1, offset=10)
    assert is_duplicate(header, window, 10, "other")  # redelivered offset
    assert is_duplicate(header, window, 9, "other")
    assert is_duplicate(header, window, 11, "m1")  # same message sent twice by a producer
    assert not is_duplicate(header, window, 11, "m2")


def test_keys() -> None:
    assert split_viewer_key("s1|name:a|b") == ("s1", "name:a|b")
    assert viewer_key_of_slot(slot_key("s1|name:a|b", 5)) == "s1|name:a|b"


def test_idle_by_wall_clock_or_by_stream_clock() -> None:
    header = ViewerSequence(capacity=2, updated_at=1000.0, last_time=500.0)
    assert not is_idle(header, now=1050, stream_clock=550, idle_seconds=100)
    assert is_idle(header, now=1101, stream_clock=550, idle_seconds=100)  # the stream went quiet
    assert is_idle(header, now=1050, stream_clock=601, idle_seconds=100)  # replay time moved on


def test_seconds_since_start_prefers_the_source_offset() -> None:
    assert seconds_since_start(1_000.0, 42.0, origin=900.0) == 42.0
    assert seconds_since_start(1_000.0, None, origin=900.0) == 100.0
    assert seconds_since_start(800.0, None, origin=900.0) == 0.0
