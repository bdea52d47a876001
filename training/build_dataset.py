"""Leak-free datasets: chat streams -> (stream, viewer, snapshot) samples, labels, chronological splits.

A sample asks "at this moment of the stream, given what the viewer has written so far, will they
(pay later | be a paid member | become a member)?". Its inputs are the viewer's model-input messages
(`ChatMessage.is_model_input`: never a paid event, a membership notice or its text) with a timestamp
strictly before the snapshot time. For membership labels, member emojis are stripped from the text
(the same `models.scorer.preprocess_text` the live agents use) and badges never reach a model input.

Snapshots sit on a grid over each stream's duration, so one viewer yields several samples (early
prediction); each (stream, viewer) carries total weight 1, so heavy chatters do not dominate.
Splits are whole streams, chronological within each group (channel): train oldest, validate next,
test newest. Held-out real data (RBTV 2017-09, HundredBeans `wxc-indonesia`) is only ever test.

Viewer history (what was known before the stream began) is computed exactly like
`infra.repository.viewer_histories`: other streams' messages with a timestamp before this stream's start.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np

from infra.events import ChatMessage, MessageKind
from infra.repository import ViewerHistory
from models.scorer import FeatureConfig, preprocess_text, seconds_since_start
from training.held_out import is_held_out

LabelKind = Literal["paid", "member", "conversion"]
LABEL_KINDS: tuple[str, ...] = ("paid", "member", "conversion")
SPLITS: tuple[str, ...] = ("train", "val", "test")
MEMBER_KINDS = frozenset({MessageKind.MEMBERSHIP_NEW, MessageKind.MEMBERSHIP_MILESTONE})
SNAPSHOT_MODES = ("grid", "messages", "before-paid")


# ---------------------------------------------------------------- inputs and configuration

@dataclass
class StreamData:
    """One stream's chat as loaded (any order); `source`/`group` feed the split and held-out rules."""

    stream_id: str
    messages: list[ChatMessage]
    source: str = ""  # file path or collector; the held-out rule reads it
    group: str = ""  # channel: splits are chronological within a group
    title: str = ""


@dataclass(frozen=True)
class DatasetConfig:
    label: LabelKind = "paid"
    n_snapshots: int = 8  # grid points over each stream's duration
    max_messages: int = 32  # newest input messages a sample keeps
    min_messages: int = 1
    max_viewers_per_stream: int | None = None  # random subset (seeded) to bound the cost
    max_snapshots_per_viewer: int | None = None
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    disjoint_viewers: bool = False  # drop training samples of viewers who appear in val/test streams
    held_out: Literal["real-data", "none"] = "real-data"
    seed: int = 0
    # "grid": n_snapshots times over each stream. "messages": right after each of the viewer's
    # messages before the event (at most max_snapshots_per_viewer, drawn at random), the moments the
    # live agents score. "before-paid": one sample per viewer, at their last message before their
    # first paid event (non-payers: their last message), the evaluation protocol of
    # `donorcast evaluate --presets` and `score --at before-paid`.
    snapshots: Literal["grid", "messages", "before-paid"] = "grid"

    def __post_init__(self) -> None:
        if self.label not in LABEL_KINDS:
            raise ValueError(f"label must be one of {', '.join(LABEL_KINDS)} (got {self.label!r})")
        if self.n_snapshots < 1 or self.max_messages < 1 or self.min_messages < 1:
            raise ValueError("n_snapshots, max_messages and min_messages must be >= 1")
        if self.snapshots not in SNAPSHOT_MODES:
            raise ValueError(f"snapshots must be one of {', '.join(SNAPSHOT_MODES)} (got {self.snapshots!r})")

    @property
    def strips_member_signals(self) -> bool:
        return self.label in ("member", "conversion")

    def feature_config(self, *, use_extras: bool = True, use_history: bool = False) -> FeatureConfig:
        return FeatureConfig(
            label=self.label, strip_member_signals=self.strips_member_signals,
            max_messages=self.max_messages, use_extras=use_extras, use_history=use_history,
        )


# ---------------------------------------------------------------- the dataset

@dataclass
class StreamInfo:
    stream_id: str
    source: str
    group: str
    title: str
    start: datetime
    end: datetime
    n_messages: int
    n_viewers: int
    held_out: bool = False
    split: str = "train"

    @property
    def duration(self) -> float:
        return (self.end - self.start).total_seconds()


@dataclass
class ViewerTrack:
    """One viewer's model-input messages in one stream, oldest first (text already preprocessed)."""

    stream: int  # index into Dataset.streams
    viewer_id: str
    viewer_name: str
    texts: list[str]
    message_ids: list[str]
    seconds: np.ndarray  # (n,) seconds since the stream's first message: snapshots and ordering
    clock: np.ndarray  # (n,) the model's stream clock (models.scorer.seconds_since_start)
    history: ViewerHistory
    positive: bool  # the label fact for this (stream, viewer)
    event_seconds: float | None  # paid: first paid event; conversion: first member signal


@dataclass
class Sample:
    track: int  # index into Dataset.tracks
    end: int  # inputs are track messages [:end], all strictly before the snapshot
    snapshot_seconds: float
    label: int
    weight: float


@dataclass
class Dataset:
    config: DatasetConfig
    streams: list[StreamInfo]
    tracks: list[ViewerTrack]
    samples: list[Sample]
    fingerprint: str = ""
    train_viewers: frozenset[str] = field(default_factory=frozenset)

    def split_of(self, sample: Sample) -> str:
        return self.streams[self.tracks[sample.track].stream].split

    def indices(self, split: str) -> list[int]:
        return [i for i, s in enumerate(self.samples) if self.split_of(s) == split]

    def window(self, sample: Sample) -> tuple[int, int]:
        """[first, end) message positions of the sample's input window (newest max_messages)."""
        return max(0, sample.end - self.config.max_messages), sample.end

    def is_new_viewer(self, sample: Sample) -> bool:
        """True when the viewer never appears in a training stream (the honest chat-only test)."""
        return self.tracks[sample.track].viewer_id not in self.train_viewers

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = {"label": self.config.label, "fingerprint": self.fingerprint}
        for split in SPLITS:
            idx = self.indices(split)
            streams = [s for s in self.streams if s.split == split]
            out[split] = {
                "streams": len(streams),
                "samples": len(idx),
                "positives": int(sum(self.samples[i].label for i in idx)),
                "viewers": len({(self.tracks[self.samples[i].track].stream,
                                 self.tracks[self.samples[i].track].viewer_id) for i in idx}),
            }
        return out


# ---------------------------------------------------------------- held-out and split rules

def real_data_held_out(info: StreamInfo) -> bool:
    """RBTV 2017-09 and HundredBeans `wxc-indonesia`: evaluation only, never train/val/threshold."""
    return is_held_out(stream_id=info.stream_id, channel=info.group, source=info.source, title=info.title,
                       start=info.start)


def assign_splits(streams: list[StreamInfo], config: DatasetConfig) -> None:
    """Whole streams, chronological within each group. If the held-out rule matches any stream, the
    test split is exactly the held-out streams; otherwise each group's newest streams are the test."""
    rule: Callable[[StreamInfo], bool] = real_data_held_out if config.held_out == "real-data" else (lambda _: False)
    for info in streams:
        info.held_out = rule(info)
    use_held_out = any(info.held_out for info in streams)
    by_group: dict[str, list[StreamInfo]] = defaultdict(list)
    for info in streams:
        if info.held_out:
            info.split = "test"
        else:
            by_group[info.group].append(info)
    for members in by_group.values():
        members.sort(key=lambda s: (s.start, s.stream_id))
        n = len(members)
        n_test = 0 if use_held_out else _share(n, config.test_fraction, keep=1)
        n_val = _share(n - n_test, config.val_fraction, keep=1)
        for position, info in enumerate(members):
            info.split = "test" if position >= n - n_test else "val" if position >= n - n_test - n_val else "train"


def _share(n: int, fraction: float, keep: int) -> int:
    """round(n * fraction), at least 1 when fraction > 0, leaving at least `keep` streams behind."""
    if fraction <= 0 or n <= keep:
        return 0
    return min(max(1, round(n * fraction)), n - keep)


# ---------------------------------------------------------------- building

@dataclass
class _ViewerFacts:
    name: str = ""
    texts: list[str] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    clock: list[float] = field(default_factory=list)
    first_paid: float | None = None
    first_member: float | None = None


@dataclass
class CompactStream:
    info: StreamInfo
    viewers: dict[str, _ViewerFacts]
    activity: list[tuple[float, str, bool, bool, float, bool]]  # ts, viewer, text?, paid?, amount, member?


def compact_stream(stream: StreamData, config: DatasetConfig) -> CompactStream | None:
    """Everything a stream contributes, without keeping its ChatMessage objects alive."""
    messages = sorted(stream.messages, key=lambda m: m.timestamp)
    if not messages:
        return None
    start = messages[0].timestamp
    origin = start.timestamp()
    features = config.feature_config()
    viewers: dict[str, _ViewerFacts] = defaultdict(_ViewerFacts)
    activity = []
    for m in messages:
        seconds = (m.timestamp - start).total_seconds()
        facts = viewers[m.viewer_id]
        facts.name = m.author_name or facts.name
        if m.is_model_input:
            facts.texts.append(preprocess_text(m.text, features))
            facts.message_ids.append(m.message_id)
            facts.seconds.append(seconds)
            facts.clock.append(seconds_since_start(m.timestamp.timestamp(), m.offset_seconds, origin))
        if m.is_paid and facts.first_paid is None:
            facts.first_paid = seconds
        if (m.is_member or m.kind in MEMBER_KINDS) and facts.first_member is None:
            facts.first_member = seconds
        activity.append((m.timestamp.timestamp(), m.viewer_id, m.kind == MessageKind.TEXT, m.is_paid,
                         float(m.amount or 0.0) if m.is_paid else 0.0, m.is_member))
    info = StreamInfo(
        stream_id=stream.stream_id, source=stream.source, group=stream.group, title=stream.title,
        start=start, end=messages[-1].timestamp, n_messages=len(messages), n_viewers=len(viewers),
    )
    return CompactStream(info=info, viewers=dict(viewers), activity=activity)


def histories_before(compacts: list[CompactStream]) -> list[dict[str, ViewerHistory]]:
    """Per stream: each of its viewers' history from other streams' messages before its start."""
    events = sorted((ts, viewer, index, text, paid, amount, member)
                    for index, c in enumerate(compacts)
                    for ts, viewer, text, paid, amount, member in c.activity)
    streams: dict[str, set[int]] = defaultdict(set)
    counts: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0, 0])  # texts, paid, amount, member
    order = sorted(range(len(compacts)), key=lambda i: compacts[i].info.start)
    result: list[dict[str, ViewerHistory]] = [{} for _ in compacts]
    pointer = 0
    for index in order:
        start = compacts[index].info.start.timestamp()
        while pointer < len(events) and events[pointer][0] < start:
            _, viewer, source, text, paid, amount, member = events[pointer]
            if source != index:
                streams[viewer].add(source)
                row = counts[viewer]
                row[0] += text
                row[1] += paid
                row[2] += amount
                row[3] = row[3] or member
            pointer += 1
        for viewer in compacts[index].viewers:
            row = counts.get(viewer)
            result[index][viewer] = ViewerHistory(
                viewer_id=viewer, past_streams=len(streams.get(viewer, ())),
                past_messages=int(row[0]) if row else 0, past_paid_events=int(row[1]) if row else 0,
                past_paid_amount=float(row[2]) if row else 0.0, was_member=bool(row[3]) if row else False,
            )
    return result


def _label(facts: _ViewerFacts, history: ViewerHistory, label: str) -> tuple[bool, float | None] | None:
    """(positive, event time) for one (stream, viewer); None when the viewer is not asked at all."""
    if label == "paid":
        return facts.first_paid is not None, facts.first_paid
    if label == "member":
        return facts.first_member is not None, None
    if history.was_member:  # conversion: an existing member cannot become one
        return None
    return facts.first_member is not None, facts.first_member


def snapshot_grid(duration: float, n: int) -> np.ndarray:
    """Seconds since start of the snapshots; the last one lies after the final message."""
    duration = max(duration, 0.0)
    return np.asarray([duration * i / n for i in range(1, n)] + [duration + 1.0])


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def inputs_before_event(seconds: Sequence[float], event_seconds: float | None) -> int:
    """How many of a viewer's input messages (times ascending) come strictly before their event."""
    if event_seconds is None:
        return len(seconds)
    return int(np.searchsorted(np.asarray(seconds, dtype=np.float64), event_seconds, side="left"))


def _before_paid_sample(track: ViewerTrack, index: int, config: DatasetConfig) -> list[Sample]:
    """The score the live system held right after the viewer's last message before the event. The
    snapshot is that message's time (+1 ms: inputs stay strictly before it), never the event's."""
    end = inputs_before_event(track.seconds, track.event_seconds)
    if end < config.min_messages:
        return []
    return [Sample(track=index, end=end, snapshot_seconds=float(track.seconds[end - 1]) + 1e-3,
                   label=int(track.positive), weight=1.0)]


def _message_samples(track: ViewerTrack, index: int, config: DatasetConfig) -> list[Sample]:
    """Right after each input message before the event; every viewer weighs 1 in total."""
    ends = list(range(config.min_messages, inputs_before_event(track.seconds, track.event_seconds) + 1))
    if config.max_snapshots_per_viewer and len(ends) > config.max_snapshots_per_viewer:
        rng = _rng(config.seed, f"msg|{index}|{track.viewer_id}")
        ends = sorted(rng.choice(ends, config.max_snapshots_per_viewer, replace=False).tolist())
    return [Sample(track=index, end=int(end), snapshot_seconds=float(track.seconds[end - 1]) + 1e-3,
                   label=int(track.positive), weight=1.0 / len(ends)) for end in ends]


def _samples_for(track: ViewerTrack, index: int, grid: np.ndarray, config: DatasetConfig) -> list[Sample]:
    if config.snapshots == "before-paid":
        return _before_paid_sample(track, index, config)
    if config.snapshots == "messages":
        return _message_samples(track, index, config)
    ends = np.searchsorted(track.seconds, grid, side="left")  # messages strictly before each snapshot
    chosen: list[tuple[int, float]] = []
    previous_end = 0
    for end, snapshot in zip(ends, grid, strict=True):
        if track.event_seconds is not None and snapshot > track.event_seconds:
            break  # the event has happened: nothing left to predict
        if end >= config.min_messages and end > previous_end:  # only snapshots with something new
            chosen.append((int(end), float(snapshot)))
            previous_end = int(end)
    if config.max_snapshots_per_viewer and len(chosen) > config.max_snapshots_per_viewer:
        rng = _rng(config.seed, f"snap|{index}|{track.viewer_id}")
        keep = np.sort(rng.choice(len(chosen), config.max_snapshots_per_viewer, replace=False))
        chosen = [chosen[i] for i in keep]
    weight = 1.0 / len(chosen) if chosen else 0.0
    return [Sample(track=index, end=end, snapshot_seconds=snapshot, label=int(track.positive), weight=weight)
            for end, snapshot in chosen]


def build_dataset(streams: Iterable[StreamData], config: DatasetConfig | None = None) -> Dataset:
    """Samples, splits and fingerprint from any iterable of streams (a generator keeps memory low)."""
    config = config or DatasetConfig()
    compacts = [c for c in (compact_stream(s, config) for s in streams) if c is not None]
    by_id = Counter(c.info.stream_id for c in compacts)
    if duplicated := [sid for sid, n in by_id.items() if n > 1]:
        raise ValueError(f"stream ids appear more than once: {', '.join(duplicated[:5])}")
    compacts.sort(key=lambda c: (c.info.start, c.info.stream_id))
    infos = [c.info for c in compacts]
    assign_splits(infos, config)
    histories = histories_before(compacts)

    tracks: list[ViewerTrack] = []
    samples: list[Sample] = []
    train_viewers: set[str] = set()
    for stream_index, compact in enumerate(compacts):
        if compact.info.split == "train":
            train_viewers.update(compact.viewers)
        grid = snapshot_grid(compact.info.duration, config.n_snapshots)
        viewer_ids = sorted(v for v, f in compact.viewers.items() if len(f.texts) >= config.min_messages)
        if config.max_viewers_per_stream and len(viewer_ids) > config.max_viewers_per_stream:
            rng = _rng(config.seed, compact.info.stream_id)
            viewer_ids = sorted(rng.choice(viewer_ids, config.max_viewers_per_stream, replace=False).tolist())
        for viewer in viewer_ids:
            facts, history = compact.viewers[viewer], histories[stream_index][viewer]
            labelled = _label(facts, history, config.label)
            if labelled is None:
                continue
            track = ViewerTrack(
                stream=stream_index, viewer_id=viewer, viewer_name=facts.name, texts=facts.texts,
                message_ids=facts.message_ids, seconds=np.asarray(facts.seconds, dtype=np.float64),
                clock=np.asarray(facts.clock, dtype=np.float64),
                history=history, positive=labelled[0], event_seconds=labelled[1],
            )
            new = _samples_for(track, len(tracks), grid, config)
            if new:
                tracks.append(track)
                samples.extend(new)
        compact.viewers = {}
        compact.activity = []

    dataset = Dataset(config=config, streams=infos, tracks=tracks, samples=samples,
                      train_viewers=frozenset(train_viewers))
    if config.disjoint_viewers:
        _drop_shared_training_viewers(dataset)
    dataset.fingerprint = fingerprint(dataset)
    return dataset


def _drop_shared_training_viewers(dataset: Dataset) -> None:
    evaluated = {dataset.tracks[s.track].viewer_id for s in dataset.samples if dataset.split_of(s) != "train"}
    dataset.samples = [
        s for s in dataset.samples
        if dataset.split_of(s) != "train" or dataset.tracks[s.track].viewer_id not in evaluated
    ]


def fingerprint(dataset: Dataset) -> str:
    """Hash of the configuration and of every stream (id, size, time span, split)."""
    payload = {
        "config": asdict(dataset.config),
        "streams": [(s.stream_id, s.n_messages, s.start.isoformat(), s.end.isoformat(), s.split)
                    for s in dataset.streams],
        "samples": len(dataset.samples),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- loaders (thin)

def streams_from_messages(messages: Iterable[ChatMessage], *, source: str = "", group: str = "") -> list[StreamData]:
    by_stream: dict[str, list[ChatMessage]] = defaultdict(list)
    for message in messages:
        by_stream[message.stream_id].append(message)
    return [StreamData(stream_id=sid, messages=msgs, source=source, group=group) for sid, msgs in by_stream.items()]


def streams_from_files(
    paths: Sequence[Path | str], *, group_of: Callable[[Path], str] | None = None, progress: bool = True
) -> Iterator[StreamData]:
    """Read chat files of any supported format (producers.readers); rejected records are counted."""
    from rich.console import Console

    from producers.readers import read_chat_file

    console = Console(stderr=True)
    for raw_path in paths:
        path = Path(raw_path)
        messages, rejected = [], 0
        for item in read_chat_file(path):
            if isinstance(item, ChatMessage):
                messages.append(item)
            else:
                rejected += 1
        if progress:
            console.print(f"[dim]{path}: {len(messages)} messages, {rejected} rejected[/dim]")
        group = group_of(path) if group_of else ""
        yield from streams_from_messages(messages, source=str(path), group=group)


async def streams_from_database(pool: object, channel_id: str | None = None) -> list[StreamData]:
    """Every stream in PostgreSQL (or one channel's) with its messages, via infra.repository."""
    from infra.repository import list_streams, stream_messages

    out = []
    for summary in await list_streams(pool, channel_id=channel_id):  # type: ignore[arg-type]
        messages = await stream_messages(pool, summary.stream_id)  # type: ignore[arg-type]
        if messages:
            out.append(StreamData(stream_id=summary.stream_id, messages=messages,
                                  source=f"postgres:{summary.platform}", group=summary.channel_id or "",
                                  title=summary.title))
    return out


def streams_from_simulator(n_streams: int, seed: int, **options: object) -> list[StreamData]:
    """Seeded simulated streams (producers.simulator) with real paid events, one group."""
    from producers.simulator import simulate

    return [StreamData(stream_id=s.stream_id, messages=list(s.messages), source="simulator", group=s.channel_id,
                       title=s.title)
            for s in simulate(n_streams, seed, **options) if s.messages]  # type: ignore[arg-type]
