"""The seeded stream simulator: deterministic, realistic enough, and its truth survives the reader."""

from __future__ import annotations

import json
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infra.cli import build_app
from infra.events import ChatMessage, MessageKind
from producers.readers import Rejected, open_reader
from producers.readers.chat_downloader import ChatDownloaderReader
from producers.simulator import STREAMER, SimulatedStream, simulate, write_chat_downloader_json


@pytest.fixture(scope="module")
def streams() -> list[SimulatedStream]:
    return simulate(3, seed=11)


def test_same_seed_same_streams_other_seed_other_streams() -> None:
    first = simulate(2, seed=5, viewers=60, minutes=15)
    again = simulate(2, seed=5, viewers=60, minutes=15)
    other = simulate(2, seed=6, viewers=60, minutes=15)
    assert [s.items for s in first] == [s.items for s in again]
    assert [s.donations for s in first] == [s.donations for s in again]
    assert [s.items for s in first] != [s.items for s in other]


def test_fast_enough() -> None:
    started = time.perf_counter()
    simulated = simulate(3, seed=1, viewers=300, minutes=60)
    elapsed = time.perf_counter() - started
    assert elapsed < 5.0, f"3 x 300 viewers x 60 min took {elapsed:.1f} s"
    assert sum(len(s.messages) for s in simulated) > 2000


def test_donors_exist_and_are_a_minority(streams: list[SimulatedStream]) -> None:
    for stream in streams:
        chatters = {m.viewer_id for m in stream.messages if not m.is_owner}
        assert stream.donor_ids and stream.donor_ids <= chatters
        assert len(stream.donor_ids) <= 0.1 * len(stream.attendees)
        assert all(d.timestamp < datetime.now(UTC) for d in stream.donations)
    kinds = {d.kind for s in streams for d in s.donations}
    assert {MessageKind.PAID_MESSAGE, MessageKind.PAID_STICKER} <= kinds
    currencies = {d.currency for s in streams for d in s.donations if d.kind is MessageKind.PAID_MESSAGE}
    assert len(currencies) >= 3


def test_same_community_and_repeat_donors_across_streams(streams: list[SimulatedStream]) -> None:
    first, second, third = (set(s.attendees) for s in streams)
    assert len(first & second) > 0.3 * len(first)
    earlier = set(streams[0].donor_ids)
    repeats = 0
    for stream in streams[1:]:
        repeats += len(stream.donor_ids & earlier)
        earlier |= stream.donor_ids
    assert repeats >= 3  # calibrated: about half of later donors paid before


def test_ground_truth_survives_the_chat_downloader_reader(streams: list[SimulatedStream], tmp_path: Path) -> None:
    stream = streams[0]
    path = write_chat_downloader_json(stream, tmp_path / f"{stream.stream_id}.json")
    assert path.read_text(encoding="utf-8").startswith("[\n    {")  # chat_downloader --output's layout
    reader = open_reader(path)
    assert isinstance(reader, ChatDownloaderReader)
    events = list(reader.read())
    assert not [e for e in events if isinstance(e, Rejected)]
    read_back = [e for e in events if isinstance(e, ChatMessage)]
    assert [m.model_dump() for m in read_back] == [m.model_dump() for m in stream.messages]
    paid = [(m.message_id, m.viewer_id, m.kind, m.amount, m.currency, m.timestamp) for m in read_back if m.is_paid]
    truth = [(d.message_id, d.viewer_id, d.kind, d.amount, d.currency, d.timestamp) for d in stream.donations]
    assert paid == truth
    jsonl = write_chat_downloader_json(stream, tmp_path / "lines" / f"{stream.stream_id}.jsonl")
    assert len(jsonl.read_text(encoding="utf-8").splitlines()) == len(stream.items)


def _before_first_payment(stream: SimulatedStream) -> tuple[list[ChatMessage], list[ChatMessage]]:
    """(donors' messages before their first payment, everyone else's), lurker donors excluded."""
    donor_msgs, other_msgs = [], []
    for message in stream.messages:
        if message.kind is not MessageKind.TEXT or message.is_owner:
            continue
        first = stream.first_donation_time(message.viewer_id)
        if first is None:
            other_msgs.append(message)
        elif message.timestamp < first and message.viewer_id not in stream.lurker_donors:
            donor_msgs.append(message)
    return donor_msgs, other_msgs


def test_donors_behave_differently_before_paying(streams: list[SimulatedStream]) -> None:
    donor_msgs, other_msgs = [], []
    for stream in streams:
        d, o = _before_first_payment(stream)
        donor_msgs += d
        other_msgs += o

    def addressing(messages: list[ChatMessage]) -> float:
        return sum(STREAMER in m.text for m in messages) / len(messages)

    def asking(messages: list[ChatMessage]) -> float:
        return sum("?" in m.text for m in messages) / len(messages)

    assert len(donor_msgs) >= 40
    assert addressing(donor_msgs) > 1.5 * addressing(other_msgs)
    assert asking(donor_msgs) > 1.3 * asking(other_msgs)
    # noisy, not a giveaway: plenty of non-donor messages look engaged too
    assert addressing(other_msgs) > 0.05


def test_amounts_follow_the_calibration() -> None:
    donations = [d for s in simulate(8, seed=3, viewers=200, minutes=45) for d in s.donations
                 if d.kind in (MessageKind.PAID_MESSAGE, MessageKind.PAID_STICKER)]
    usd = [d.usd for d in donations]
    assert 1.9 <= statistics.median(usd) <= 5.0  # WoS: median $4.99, $2 the commonest tier
    assert max(usd) <= 100.0 and min(usd) >= 0.99


def test_simulate_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DONORCAST_STATE_DIR", str(tmp_path / "state"))
    out = tmp_path / "sim"
    result = CliRunner().invoke(build_app(), ["simulate", "--streams", "2", "--seed", "4", "--out", str(out),
                                              "--viewers", "40", "--minutes", "10"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("*.json")) == sorted(f"{sid}.json" for sid in
                                                               json.loads((out / "truth" / "ground_truth.json").read_text()))
    truth = json.loads((out / "truth" / "ground_truth.json").read_text(encoding="utf-8"))
    assert len(truth) == 2
    for stream_id, info in truth.items():
        messages = [e for e in open_reader(out / f"{stream_id}.json").read() if isinstance(e, ChatMessage)]
        paid_ids = {m.message_id for m in messages if m.is_paid}
        assert paid_ids == {d["message_id"] for d in info["donations"]}
        assert set(info["donors"]) == {d["viewer_id"] for d in info["donations"]}
