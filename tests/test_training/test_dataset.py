"""Leak-free dataset building: snapshots, labels, weights, chronological grouped splits, held-out rule."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from infra.events import ChatMessage, MessageKind
from training.build_dataset import (
    DatasetConfig,
    StreamData,
    StreamInfo,
    build_dataset,
    real_data_held_out,
    snapshot_grid,
)

WORDS = ["hallo", "lol", "gg", "nice", "wow", "haha", "ok", "cool", "was", "geht"]


def make_stream(stream_id: str, start: datetime, *, n_viewers: int = 12, seed: int = 0,
                group: str = "", source: str = "") -> StreamData:
    """Chat with paid events (distinctive text), members who post member emojis, and ordinary viewers."""
    rng = random.Random(seed)
    messages: list[ChatMessage] = []
    counter = 0

    def add(viewer: int, seconds: float, text: str, **fields: object) -> None:
        nonlocal counter
        counter += 1
        messages.append(ChatMessage(
            stream_id=stream_id, message_id=f"{stream_id}-{counter}", timestamp=start + timedelta(seconds=seconds),
            author_id=f"UC{viewer:04d}", author_name=f"viewer {viewer}", text=text, **fields,
        ))

    for viewer in range(n_viewers):
        member = viewer % 3 == 0
        donor = viewer % 4 == 1
        times = sorted(rng.uniform(0, 3600) for _ in range(rng.randint(1, 15)))
        for t in times:
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))
            if member and rng.random() < 0.5:
                text += " :_rbtvHeart:"
            add(viewer, t, text, is_member=member, badges=("Member (1 year)",) if member else ())
        if donor:
            paid_at = rng.uniform(600, 3000)
            add(viewer, paid_at, f"PAIDTEXT {viewer} take my money", kind=MessageKind.PAID_MESSAGE,
                amount=5.0, currency="EUR", is_member=member)
        if viewer == 2:  # becomes a member mid-stream
            add(viewer, 1800.0, "", kind=MessageKind.MEMBERSHIP_NEW, is_member=True)
            add(viewer, 1900.0, "now I am in :_rbtvHeart:", is_member=True)
    return StreamData(stream_id=stream_id, messages=messages, group=group, source=source)


def streams(n: int = 5, **kwargs: object) -> list[StreamData]:
    day = datetime(2024, 3, 1, 18, tzinfo=UTC)
    return [make_stream(f"s{i}", day + timedelta(days=i), seed=i, **kwargs) for i in range(n)]


def _by_id(data: list[StreamData]) -> dict[str, ChatMessage]:
    return {m.message_id: m for s in data for m in s.messages}


@pytest.mark.parametrize("snapshots", ["grid", "messages", "before-paid"])
@pytest.mark.parametrize("label", ["paid", "member", "conversion"])
def test_no_input_at_or_after_snapshot_and_no_paid_text(label: str, snapshots: str) -> None:
    data = streams()
    dataset = build_dataset(data, DatasetConfig(label=label, n_snapshots=6, snapshots=snapshots))  # type: ignore[arg-type]
    messages = _by_id(data)
    assert dataset.samples
    for sample in dataset.samples:
        track = dataset.tracks[sample.track]
        info = dataset.streams[track.stream]
        snapshot = info.start + timedelta(seconds=sample.snapshot_seconds)
        inputs = [messages[mid] for mid in track.message_ids[: sample.end]]
        assert len(inputs) == sample.end >= 1
        for message in inputs:
            assert message.timestamp < snapshot  # strictly before the snapshot
            assert message.is_model_input and not message.is_paid
        for text in track.texts[: sample.end]:
            assert "PAIDTEXT" not in text
            if label != "paid":
                assert ":_" not in text  # member emojis stripped for membership labels
    if label == "paid":  # ... and the paid label keeps ordinary text untouched
        assert any(":_rbtvHeart:" in t for tr in dataset.tracks for t in tr.texts)


def test_paid_label_snapshots_stop_at_the_paid_event() -> None:
    data = streams(3)
    dataset = build_dataset(data, DatasetConfig(label="paid", n_snapshots=10))
    positives = [s for s in dataset.samples if s.label == 1]
    assert positives
    for sample in positives:
        track = dataset.tracks[sample.track]
        assert track.event_seconds is not None and sample.snapshot_seconds <= track.event_seconds
    donors = {(t.stream, t.viewer_id) for t in dataset.tracks if t.positive}
    # Every positive is a real payer with chat before paying (a payer whose chat started after the
    # last snapshot before the payment has no sample at all).
    assert {(dataset.streams[t.stream].stream_id, t.viewer_id) for t in dataset.tracks if t.positive} <= {
        (s.stream_id, m.viewer_id) for s in data for m in s.messages if m.is_paid
        if any(x.viewer_id == m.viewer_id and x.is_model_input and x.timestamp < m.timestamp for x in s.messages)
    }
    assert len(donors) >= 3


@pytest.mark.parametrize("snapshots", ["messages", "before-paid"])
def test_message_snapshots_see_nothing_from_the_payment_on(snapshots: str) -> None:
    """Message-time snapshots: every input strictly before the viewer's first paid event; before-paid
    is one sample per viewer holding every message before that event (all of a non-payer's)."""
    data = streams(3)
    dataset = build_dataset(data, DatasetConfig(label="paid", snapshots=snapshots, max_snapshots_per_viewer=5))  # type: ignore[arg-type]
    messages = _by_id(data)
    per_track: dict[int, list] = {}
    for sample in dataset.samples:
        per_track.setdefault(sample.track, []).append(sample)
        track = dataset.tracks[sample.track]
        if track.event_seconds is not None:
            assert track.seconds[sample.end - 1] < track.event_seconds
        assert sample.snapshot_seconds > track.seconds[sample.end - 1]  # just after a message, not an event
    for index, samples in per_track.items():
        track = dataset.tracks[index]
        before = sum(1 for s in track.seconds if track.event_seconds is None or s < track.event_seconds)
        assert sum(s.weight for s in samples) == pytest.approx(1.0)
        if snapshots == "before-paid":
            assert [s.end for s in samples] == [before]
        else:
            assert len(samples) == min(before, 5) and max(s.end for s in samples) <= before
    assert all(messages[mid].is_model_input for t in dataset.tracks for mid in t.message_ids)


def test_member_and_conversion_labels() -> None:
    data = streams(3)
    member = build_dataset(data, DatasetConfig(label="member"))
    for track in member.tracks:
        assert track.positive == (int(track.viewer_id[2:]) % 3 == 0 or track.viewer_id == "UC0002")
    conversion = build_dataset(data, DatasetConfig(label="conversion"))
    converted = {t.viewer_id for t in conversion.tracks if t.positive}
    assert converted == {"UC0002"}  # members from their first message are never asked
    # Viewer 2 became a member in the first stream, so later streams do not ask again (history).
    assert {conversion.streams[t.stream].stream_id for t in conversion.tracks if t.viewer_id == "UC0002"} == {"s0"}


def test_weights_sum_to_one_per_viewer_and_snapshots_are_early_and_late() -> None:
    dataset = build_dataset(streams(2), DatasetConfig(n_snapshots=8))
    totals: dict[int, float] = {}
    for sample in dataset.samples:
        totals[sample.track] = totals.get(sample.track, 0.0) + sample.weight
    assert np.allclose(list(totals.values()), 1.0)
    ends = {}
    for sample in dataset.samples:
        ends.setdefault(sample.track, []).append(sample.end)
    assert any(len(v) > 1 and v == sorted(v) and len(set(v)) == len(v) for v in ends.values())
    assert len(snapshot_grid(100.0, 4)) == 4 and snapshot_grid(100.0, 4)[-1] > 100.0


def test_history_counts_only_earlier_streams() -> None:
    dataset = build_dataset(streams(3), DatasetConfig(label="member"))
    for track in dataset.tracks:
        index = track.stream
        assert track.history.past_streams <= index
        if index == 0:
            assert track.history.past_streams == 0 and not track.history.was_member
    members_later = [t for t in dataset.tracks if t.stream == 2 and int(t.viewer_id[2:]) % 3 == 0]
    assert members_later and all(t.history.was_member for t in members_later)


def test_splits_are_chronological_whole_streams_per_group() -> None:
    day = datetime(2024, 1, 1, tzinfo=UTC)
    data = [make_stream(f"a{i}", day + timedelta(days=i), seed=i, group="A") for i in range(10)]
    data += [make_stream(f"b{i}", day + timedelta(days=i, hours=5), seed=50 + i, group="B") for i in range(5)]
    random.Random(1).shuffle(data)
    dataset = build_dataset(data, DatasetConfig(val_fraction=0.2, test_fraction=0.2))
    for group in ("A", "B"):
        infos = sorted((s for s in dataset.streams if s.group == group), key=lambda s: s.start)
        order = [s.split for s in infos]
        assert order == sorted(order, key=["train", "val", "test"].index), order
        assert {"train", "val", "test"} <= set(order)
    for sample in dataset.samples:  # a stream's samples all share its split
        assert dataset.split_of(sample) == dataset.streams[dataset.tracks[sample.track].stream].split
    # new viewers: never in a training stream
    train_ids = {m.viewer_id for s in data for m in s.messages
                 if next(i for i in dataset.streams if i.stream_id == s.stream_id).split == "train"}
    assert dataset.train_viewers == train_ids


def test_disjoint_viewers_drops_shared_training_viewers() -> None:
    dataset = build_dataset(streams(6), DatasetConfig(disjoint_viewers=True))
    evaluated = {dataset.tracks[s.track].viewer_id for s in dataset.samples if dataset.split_of(s) != "train"}
    trained = {dataset.tracks[s.track].viewer_id for s in dataset.samples if dataset.split_of(s) == "train"}
    assert evaluated and not (evaluated & trained)


def test_real_data_held_out_rule_is_test_only() -> None:
    rbtv_sept = datetime(2017, 9, 3, tzinfo=UTC)
    data = [make_stream("rbtv-2017-08-30", datetime(2017, 8, 30, tzinfo=UTC), source="raw/rbtv-youtube-chatlogs/2017/08/30.txt", group="rbtv"),
            make_stream("rbtv-2017-08-31", datetime(2017, 8, 31, tzinfo=UTC), source="raw/rbtv-youtube-chatlogs/2017/08/31.txt", group="rbtv"),
            make_stream("rbtv-2017-09-03", rbtv_sept, source="raw/rbtv-youtube-chatlogs/2017/09/03.txt", group="rbtv"),
            make_stream("vid1", datetime(2022, 4, 1, tzinfo=UTC), source="raw/hundredbeans-yt-livechat/anonim/history/vid1.json", group="anonim"),
            make_stream("vid2", datetime(2022, 4, 2, tzinfo=UTC), source="raw/hundredbeans-yt-livechat/anonim/history/vid2.json", group="anonim"),
            make_stream("vid3", datetime(2022, 3, 1, tzinfo=UTC), source="raw/hundredbeans-yt-livechat/wxc-indonesia/history/vid3.json", group="wxc")]
    dataset = build_dataset(data, DatasetConfig(label="member"))
    split = {s.stream_id: s.split for s in dataset.streams}
    assert split["rbtv-2017-09-03"] == "test" and split["vid3"] == "test"
    assert split["vid2"] == "val" and split["rbtv-2017-08-31"] == "val"
    assert split["vid1"] == "train" and split["rbtv-2017-08-30"] == "train"
    info = StreamInfo(stream_id="x", source="", group="UCRBgZ9ondGvlcR-E_snJY2Q", title="", start=rbtv_sept,
                      end=rbtv_sept, n_messages=1, n_viewers=1)
    assert real_data_held_out(info)


def test_subsampling_and_fingerprint_are_deterministic() -> None:
    config = DatasetConfig(max_viewers_per_stream=5, max_snapshots_per_viewer=2, seed=3)
    first, second = build_dataset(streams(3), config), build_dataset(streams(3), config)
    assert first.fingerprint == second.fingerprint
    assert [(s.track, s.end) for s in first.samples] == [(s.track, s.end) for s in second.samples]
    assert max(sum(1 for t in first.tracks if t.stream == i) for i in range(3)) <= 5
    other = build_dataset(streams(3), DatasetConfig(max_viewers_per_stream=5, seed=4))
    assert other.fingerprint != first.fingerprint
