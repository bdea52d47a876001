"""The order in which one micro-batch reaches the broker, which is what a `kill -9` can cut short.

The worker's tables and topics are plain mappings and callables here, each write logged, and `settle`
(the producer flush) logged too: whatever the broker holds when a worker dies is a prefix of this log
up to some flush. So the log says what a kill at any moment leaves behind.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from infra.events import DonorScore
from infra.settings import load_settings
from models.registry import ModelRegistry
from stream_agents.agents import handle
from stream_agents.metrics import Metrics
from stream_agents.pipeline import Runtime, write_applied
from stream_agents.score import ModelRunner
from stream_agents.sequences import SequenceStore, ViewerSequence
from tests.test_stream_agents.harness import MALFORMED, synthetic_stream
from tests.test_stream_agents.scorer_double import load_double, promote_double


class LoggedTable(dict):
    def __init__(self, name: str, log: list[tuple[str, object]]) -> None:
        super().__init__()
        self.name, self.log = name, log

    def __setitem__(self, key: object, value: object) -> None:
        self.log.append((self.name, key))
        super().__setitem__(key, value)


def logged_runtime(tmp_path: Path, log: list[tuple[str, object]]) -> tuple[Runtime, list[DonorScore]]:
    settings = load_settings(state_dir=tmp_path, sequence_length=3)
    promote_double(settings.registry_dir)
    published: list[DonorScore] = []

    async def send_score(score: DonorScore) -> None:
        log.append(("score", score.viewer_id))
        published.append(score)

    async def send_dead_letter(letter: object) -> None:
        log.append(("dead_letter", None))

    async def settle() -> None:
        log.append(("settle", None))

    rt = Runtime(
        settings=settings,
        store=SequenceStore(LoggedTable("header", log), LoggedTable("slot", log), settings.sequence_length),
        models=ModelRunner(ModelRegistry(settings.registry_dir), loader=load_double),
        metrics=Metrics(), send_score=send_score, send_dead_letter=send_dead_letter, settle=settle,
        offsets=LoggedTable("offset", log),
    )
    return rt, published


def records(values: list[bytes], keys: list[bytes]) -> list[SimpleNamespace]:
    """faust events as `sort_events` reads them: one partition, offsets from 0."""
    return [SimpleNamespace(value=value, message=SimpleNamespace(topic="chat-messages", partition=0, offset=i, key=key))
            for i, (value, key) in enumerate(zip(values, keys, strict=True))]


def one_batch() -> list[SimpleNamespace]:
    messages = synthetic_stream("s1", viewers=4, messages=20, donors=1, seed=2)
    values = [m.model_dump_json().encode() for m in messages] + [MALFORMED[0]]
    keys = [f"s1|{m.viewer_id}".encode() for m in messages] + [b"x"]
    return records(values, keys)


def flushed_before(log: list[tuple[str, object]], kind: str, position: int) -> bool:
    """Every `kind` write before `position` is followed by a flush that is itself before `position`."""
    last_write = max((i for i, (name, _) in enumerate(log[:position]) if name == kind), default=-1)
    return any(name == "settle" for name, _ in log[last_write + 1 : position])


async def test_each_write_follows_a_flush_of_the_writes_it_vouches_for(tmp_path: Path) -> None:
    log: list[tuple[str, object]] = []
    rt, published = logged_runtime(tmp_path, log)
    await handle(rt, one_batch())
    names = [name for name, _ in log]
    assert {"slot", "header", "score", "dead_letter", "offset"} <= set(names)
    first_header, offset = names.index("header"), names.index("offset")
    assert names.count("offset") == 1 and offset == len(names) - 1
    for kind in ("slot", "score", "dead_letter"):  # a header never counts a message whose slot or score is lost
        assert flushed_before(log, kind, first_header), f"a header can reach the broker before a {kind}"
    assert flushed_before(log, "header", offset), "the applied offset can reach the broker before a header"
    assert {s.viewer_id for s in published} == {f"UC{v:05d}" for v in range(4)}


async def test_a_kill_before_the_headers_landed_repeats_the_scores_after_them_never(tmp_path: Path) -> None:
    log: list[tuple[str, object]] = []
    rt, published = logged_runtime(tmp_path, log)
    batch = one_batch()
    await handle(rt, batch)
    first = {(s.viewer_id, s.n_messages, s.event_time): s.probability for s in published}
    headers = dict(rt.store.headers)

    published.clear()
    await handle(rt, batch)  # the offset landed: the redelivered batch is skipped
    assert published == []

    rt.offsets.clear()  # killed after the headers landed, before the offset: counted, scores already out
    await handle(rt, batch)
    assert published == []  # a duplicate is never scored again (a second redelivery would make a third copy)
    assert {k: rt.store.header(k).count for k in rt.store.headers} == {
        k: ViewerSequence.from_bytes(v).count for k, v in headers.items()}  # no message counted twice

    rt.offsets.clear()  # killed before the headers landed: the slots and scores may be there, not the counts
    dict.clear(rt.store.headers)
    await handle(rt, batch)
    again = {(s.viewer_id, s.n_messages, s.event_time): s.probability for s in published}
    assert again == first  # the same scores once more, never a lost or a different one
    assert {k: rt.store.header(k).count for k in rt.store.headers} == {
        k: ViewerSequence.from_bytes(v).count for k, v in headers.items()}


async def test_an_unacknowledged_batch_holds_its_applied_offset_back_until_a_later_acknowledgement(
        tmp_path: Path) -> None:
    log: list[tuple[str, object]] = []
    rt, _ = logged_runtime(tmp_path, log)
    answers = iter([True, False])  # the batch's slots acknowledged, its headers not

    async def settle() -> None:
        if not next(answers, True):
            raise ConnectionError("broker gone")

    rt.settle = settle
    batch = one_batch()
    await handle(rt, batch)
    assert rt.applied(0) is None and rt.held_back == {0: len(batch) - 1}
    await write_applied(rt, {})  # the lag timer's retry, the broker answering again
    assert rt.applied(0) == len(batch) - 1 and rt.held_back == {}
