"""One held-out rule (training.held_out) for pretraining, dataset building and fitting: no stream of
RBTV 2017-09 or HundredBeans `wxc-indonesia` reaches training, validation or thresholds by any path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from infra.events import ChatMessage, MessageKind
from training.build_dataset import DatasetConfig, StreamData, build_dataset
from training.held_out import WXC_INDONESIA_CHANNEL, is_held_out
from training.pretrain_mlm import PretrainConfig, StreamText, select_streams

# Every way a held-out stream can be named: (stream id, channel/group, source path, start)
HELD_OUT = [
    ("rbtv-2017-09-03", "rbtv", "rbtv-youtube-chatlogs/2017-09-03.log", datetime(2017, 9, 3, 18, tzinfo=UTC)),
    ("abcDEF12345", "wxc-indonesia", "hundredbeans/wxc-indonesia/history/abcDEF12345.json",
     datetime(2023, 5, 1, tzinfo=UTC)),
    ("xyzXYZ98765", WXC_INDONESIA_CHANNEL, "postgres:youtube", datetime(2023, 6, 1, tzinfo=UTC)),
    ("rbtv-x", "rbtv", "postgres:irc", datetime(2017, 9, 30, 23, tzinfo=UTC)),  # only the start month tells
]
KEPT = [
    ("rbtv-2017-08-31", "rbtv", "rbtv-youtube-chatlogs/2017-08-31.log", datetime(2017, 8, 31, 18, tzinfo=UTC)),
    ("ghiGHI55555", "anonim", "hundredbeans/anonim/history/ghiGHI55555.json", datetime(2023, 5, 2, tzinfo=UTC)),
]


def chat(stream_id: str, start: datetime, group: str, source: str) -> StreamData:
    messages = []
    for i in range(40):
        viewer = f"UCv{i % 8}"
        kind = MessageKind.MEMBERSHIP_NEW if i == 39 else MessageKind.TEXT
        messages.append(ChatMessage(stream_id=stream_id, message_id=f"{stream_id}-{i}", author_id=viewer,
                                    author_name=viewer, timestamp=start + timedelta(seconds=30 * i),
                                    text="" if kind != MessageKind.TEXT else f"hallo {i}", kind=kind,
                                    is_member=i % 8 == 0))
    return StreamData(stream_id=stream_id, messages=messages, group=group, source=source)


@pytest.mark.parametrize(("stream_id", "channel", "source", "start"), HELD_OUT)
def test_the_rule_names_every_held_out_stream(stream_id: str, channel: str, source: str, start: datetime) -> None:
    assert is_held_out(stream_id=stream_id, channel=channel, source=source, start=start)


@pytest.mark.parametrize(("stream_id", "channel", "source", "start"), KEPT)
def test_the_rule_keeps_the_training_streams(stream_id: str, channel: str, source: str, start: datetime) -> None:
    assert not is_held_out(stream_id=stream_id, channel=channel, source=source, start=start)


def test_pretraining_never_reads_a_held_out_stream_even_when_asked_for_it() -> None:
    corpus = [StreamText(sid, ["x"], channel_id=ch) for sid, ch, _, _ in HELD_OUT[:3] + KEPT]
    chosen, excluded = select_streams(corpus, PretrainConfig(streams=[s.stream_id for s in corpus]))
    assert {s.stream_id for s in chosen} == {sid for sid, *_ in KEPT}
    assert set(excluded) == {sid for sid, *_ in HELD_OUT[:3]}


def test_datasets_and_so_fits_see_held_out_streams_only_as_test() -> None:
    streams = [chat(sid, start, ch, src) for sid, ch, src, start in HELD_OUT + KEPT]
    for label in ("paid", "member"):
        dataset = build_dataset(streams, DatasetConfig(label=label, n_snapshots=4))  # type: ignore[arg-type]
        held = {sid for sid, *_ in HELD_OUT}
        assert {s.stream_id for s in dataset.streams if s.split == "test"} == held
        for sample in dataset.samples:
            info = dataset.streams[dataset.tracks[sample.track].stream]
            assert (info.stream_id in held) == (dataset.split_of(sample) == "test")
