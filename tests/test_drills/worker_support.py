"""Helpers for the worker drills: the end-of-drill accounting, RSS sampling, and a slowed worker.

The worker is the real one, run as a process exactly as the stream-agent tests run it
(tests/test_stream_agents/harness.py, imported, not copied): real Tansu, real PostgreSQL, real faust.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from infra.events import ChatMessage, DeadLetter, DonorScore
from infra.settings import Settings
from infra.topics import DEAD_LETTERS, DONOR_SCORES
from tests.test_stream_agents.harness import score_key

# A re-scored window in another micro-batch: ONNX kernels differ by batch shape in the last float bits
# (tests/test_training/test_export_onnx.py: batch invariance <= 1e-5).
SAME_SCORE = 1e-5


@dataclass
class Accounting:
    """What became of every produced record, counted (multisets, never sets)."""

    produced: int  # valid messages + malformed records
    stored: int  # valid messages in chat_messages (each exactly once)
    scored_viewers: int  # viewers whose latest score counts every one of their input messages
    inputs_counted: int  # input messages counted into those scores
    paid_stored: int  # paid events stored (outcomes, never model inputs)
    dead_lettered: int  # dead letters read back: exactly one per malformed record
    scores_topic: int  # score records on donor-scores (each a distinct score)
    scores_postgres: int  # rows in viewer_scores (one per score on the topic)
    repeated_after_kill: int = 0  # scores a kill -9 re-published under the same key (see account)

    def line(self) -> str:
        return (f"{self.produced} produced -> {self.stored} stored once ({self.paid_stored} paid), "
                f"{self.inputs_counted} inputs counted into {self.scored_viewers} viewers' scores, "
                f"{self.dead_lettered} dead-lettered once each; {self.scores_topic} scores on the topic once each "
                f"= {self.scores_postgres} PostgreSQL rows"
                + (f"; {self.repeated_after_kill} scores re-published under the same key after the kill"
                   if self.repeated_after_kill else ""))


def expected_inputs(messages: Sequence[ChatMessage]) -> dict[tuple[str, str], int]:
    return dict(Counter((m.stream_id, m.viewer_id) for m in messages if m.is_model_input))


async def wait_rows(pool: asyncpg.Pool, check: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
    """Poll PostgreSQL until `check(state)`; returns the last state either way. `ids` and `score_keys` are
    Counters (rows per key), so a duplicate row shows."""
    deadline = time.monotonic() + timeout
    while True:
        state = {
            "rows": await pool.fetchval("SELECT count(*) FROM chat_messages"),
            "ids": Counter({r["message_id"]: r["n"] for r in await pool.fetch(
                "SELECT message_id, count(*) AS n FROM chat_messages GROUP BY message_id")}),
            "paid": await pool.fetchval("SELECT count(*) FROM chat_messages WHERE kind <> 'text'"),
            "latest": {(r["stream_id"], r["viewer_id"]): r["n_messages"] for r in await pool.fetch(
                "SELECT stream_id, viewer_id, n_messages FROM viewer_scores_latest")},
            "score_keys": Counter({(r["stream_id"], r["viewer_id"], r["event_time"], r["n_messages"],
                                    r["model_version"]): r["n"] for r in await pool.fetch(
                "SELECT stream_id, viewer_id, event_time, n_messages, model_version, count(*) AS n "
                "FROM viewer_scores GROUP BY 1, 2, 3, 4, 5")}),
            "scores": await pool.fetchval("SELECT count(*) FROM viewer_scores"),
        }
        if check(state) or time.monotonic() > deadline:
            return state
        await asyncio.sleep(0.5)


def differences(got: Counter[Any], want: Counter[Any]) -> str:
    """'N missing (e.g. ...), M extra (e.g. ...)' between two multisets; '' when equal."""
    missing, extra = want - got, got - want
    if not missing and not extra:
        return ""
    return (f"{sum(missing.values())} missing (e.g. {list(missing.items())[:5]}), "
            f"{sum(extra.values())} extra (e.g. {list(extra.items())[:5]})")


async def read_all(settings: Settings, spec: Any, idle: float = 2.0, timeout: float = 60.0) -> list[Any]:
    """Every record of a topic (all partitions, from the start, no consumer group), read to its end: past
    the end offsets the broker reports, then until nothing new came for `idle` seconds. Never up to an
    expected count, so an extra or repeated record is read too."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from infra.topics import partitions_of, topic_name

    name = topic_name(spec, settings)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    records: list[Any] = []
    try:
        tps = [TopicPartition(name, p) for p in range(partitions_of(spec, settings))]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while True:
            batch = await consumer.getmany(timeout_ms=300)
            got = [r for items in batch.values() for r in items]
            records.extend(got)
            if got:
                quiet_since = time.monotonic()
            at_end = all([await consumer.position(tp) >= ends[tp] for tp in tps])
            if at_end and time.monotonic() - quiet_since > idle:
                return records
            assert time.monotonic() < deadline, f"{name}: not read to its end offsets {ends} in {timeout} s"
    finally:
        await consumer.stop()


async def account(settings: Settings, pool: asyncpg.Pool, messages: Sequence[ChatMessage],
                  malformed: Sequence[bytes] = (), timeout: float = 90.0, killed: bool = False) -> Accounting:
    """Every produced record is stored exactly once and counted into its viewer's score exactly once, or
    dead-lettered exactly once with a reason; nothing else exists. Each score is in viewer_scores exactly
    once, and on the donor-scores topic exactly once (records re-delivered at or before their partition's
    applied offset are skipped: stream_agents/agents.py skip_applied).

    `killed`: a worker was killed with -9. A batch's scores, its viewer headers and its applied offset
    are writes to three topics with no transaction between them; a kill after the scores reached the
    broker and before the headers did re-delivers the batch, which is scored again (after the headers,
    its messages are duplicates and never scored again). Measured under load (p50 latency 20 s): one
    score in 455. Then a score may be on the topic twice with the same key (stream, viewer, event time,
    message count, model version) and the same probability (the same stored window, scored in another
    batch: within the scorer's batch invariance, SAME_SCORE), never a third time; `scored_at` is the
    second scoring's clock, and rank and explanation are read from the leaderboard as it stands then.
    PostgreSQL still holds it once. The repeats are counted in the result (README, Guarantees; issue 16:
    exactly once needs Kafka transactions).
    Fails naming what is missing or extra."""
    want_ids = Counter(m.message_id for m in messages)
    assert max(want_ids.values(), default=1) == 1, "the drill's own messages must have unique ids"
    inputs = expected_inputs(messages)
    state = await wait_rows(pool, lambda s: s["ids"] == want_ids and s["latest"] == inputs, timeout)
    problem = differences(state["ids"], want_ids)
    assert not problem, f"chat_messages rows per message id: {problem}"
    assert state["rows"] == len(messages)
    short = {k: (state["latest"].get(k), n) for k, n in inputs.items() if state["latest"].get(k) != n}
    assert not short, f"{len(short)} viewers' latest score does not count all their inputs (got, want): {dict(list(short.items())[:5])}"
    assert set(state["latest"]) == set(inputs), "a score for a viewer with no input message"

    letters = [DeadLetter.model_validate_json(r.value) for r in await read_all(settings, DEAD_LETTERS)]
    assert all(letter.reason.strip() and letter.location for letter in letters)
    if killed:  # the same two-write window as the scores below: the identical letter (same origin) again
        by_origin = Counter((letter.location, letter.raw) for letter in letters)
        assert max(by_origin.values(), default=1) <= 2, f"a dead letter three times: {by_origin.most_common(2)}"
        letters = list({(letter.location, letter.raw): letter for letter in letters}.values())
    problem = differences(Counter(letter.raw_bytes() for letter in letters), Counter(malformed))
    assert not problem, f"dead letters (each malformed record exactly once): {problem}"

    records = await read_all(settings, DONOR_SCORES)
    topic = Counter(score_key(DonorScore.model_validate_json(r.value)) for r in records)
    distinct = Counter(dict.fromkeys(topic, 1))
    state = await wait_rows(pool, lambda s: s["score_keys"] == distinct, 30)
    problem = differences(state["score_keys"], distinct)
    assert not problem, f"viewer_scores rows against the distinct scores on the topic: {problem}"
    repeats = topic - distinct
    if killed:
        probabilities: dict[Any, list[float]] = {}
        for r in records:
            score = DonorScore.model_validate_json(r.value)
            probabilities.setdefault(score_key(score), []).append(score.probability)
        assert max(topic.values(), default=1) <= 2, f"a score published three times or more: {topic.most_common(3)}"
        differing = {k: probabilities[k] for k in repeats if max(probabilities[k]) - min(probabilities[k]) > SAME_SCORE}
        assert not differing, f"a repeated score key with another probability: {list(differing.items())[:5]}"
    else:
        assert not repeats, f"{sum(repeats.values())} scores published more than once: {list(repeats.items())[:5]}"
    return Accounting(
        produced=len(messages) + len(malformed), stored=state["rows"], scored_viewers=len(inputs),
        inputs_counted=sum(inputs.values()), paid_stored=state["paid"], dead_lettered=len(letters),
        scores_topic=sum(distinct.values()), scores_postgres=state["scores"],
        repeated_after_kill=sum(repeats.values()))


def worker_report(worker: Any, lines: int = 80) -> str:
    """A worker's state for a failure message: its last summary and lag per partition (if it still answers),
    every WARNING/ERROR line of its log and the tail of the log, without faust's table drawings."""
    name = worker.log_path.name
    try:
        lag = "\n".join(line for line in worker.get("/metrics").splitlines()
                        if line.startswith("donorcast_consumer_lag{"))
        state = f"summary {worker.summary()}\n{lag}"
    except Exception as error:  # noqa: BLE001 - killed, stopped or hung: say so
        state = f"no answer ({type(error).__name__}: {error})"
    try:
        text = worker.log_path.read_text(errors="replace").splitlines()
    except OSError:
        text = []
    text = [line for line in text if not line.startswith(("|", "+"))]
    flagged = [line for line in text if "[WARNING]" in line or "[ERROR]" in line][-60:]
    return (f"==== {name}: {state}\n---- {name}: WARNING/ERROR lines (last 60)\n" + "\n".join(flagged)
            + f"\n---- {name}: last {lines} lines\n" + "\n".join(text[-lines:]))


@contextmanager
def reported_on_failure(workers: list[Any]) -> Iterator[None]:
    """On any failure inside, print each worker's report (pytest shows it with the failure); `workers` may
    grow inside the block (a worker started later)."""
    try:
        yield
    except BaseException:
        for worker in workers:
            print(worker_report(worker))
        raise


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def sequences(worker: Any, stream_id: str) -> dict[str, list[str]]:
    return {v: h["message_ids"] for v, h in worker.get(f"/streams/{stream_id}/sequences").items() if h["message_ids"]}


def start_worker_module(settings: Settings, port: int, log_path: Path, module: str,
                        extra_env: dict[str, str] | None = None) -> Any:
    """harness.start_worker for another worker module (same launch, same WorkerProcess)."""
    from infra.workers import spawn_worker
    from tests.test_stream_agents.harness import WorkerProcess

    process = spawn_worker(settings.model_copy(update={"web_port": port}), log_path=log_path, module=module,
                           extra_env=extra_env, die_with_parent_process=False)
    return WorkerProcess(process, port, log_path)


def malformed_records(n: int) -> list[bytes]:
    """`n` distinct records the contract rejects, of the kinds of harness.MALFORMED (not JSON, no
    timestamp, a paid message without an amount, a timestamp before 2005)."""
    import json

    kinds = [
        lambda i: f"not json at all #{i}".encode(),
        lambda i: json.dumps({"stream_id": "s", "message_id": f"x{i}"}).encode(),
        lambda i: json.dumps({"stream_id": "s", "message_id": f"y{i}", "timestamp": "2026-03-01T18:00:00Z",
                              "kind": "paid_message", "text": "no amount"}).encode(),
        lambda i: json.dumps({"stream_id": "s", "message_id": f"z{i}", "timestamp": "1970-01-01T00:00:00Z"}).encode(),
    ]
    return [kinds[i % len(kinds)](i) for i in range(n)]


class MixedPublisher:
    """Publish valid messages (through the project's KafkaPublisher) with malformed records interleaved
    evenly among them (straight onto the topic, spread over partitions by their keys), from a thread at
    about `rate` records per second, so a drill can kill workers while both kinds are in flight."""

    def __init__(self, settings: Settings, messages: Sequence[ChatMessage], raw: Sequence[bytes], rate: float):
        import threading

        self.settings, self.messages, self.raw, self.rate = settings, messages, raw, rate
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MixedPublisher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(180)
        assert not self.thread.is_alive(), "the publisher did not finish"
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        from aiokafka import AIOKafkaProducer

        from infra.topics import CHAT_MESSAGES, topic_name
        from producers.publisher import KafkaPublisher

        every = max(1, len(self.messages) // max(1, len(self.raw)))
        topic = topic_name(CHAT_MESSAGES, self.settings)

        async def paced() -> None:
            raw = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap)
            await raw.start()
            try:
                async with KafkaPublisher(self.settings) as publisher:
                    started, sent, pending = time.monotonic(), 0, list(self.raw)
                    for i, message in enumerate(self.messages):
                        await publisher.publish(message)
                        sent += 1
                        if i % every == every // 2 and pending:
                            await raw.send_and_wait(topic, value=pending.pop(), key=f"junk|{i}".encode())
                            sent += 1
                        ahead = sent / self.rate - (time.monotonic() - started)
                        if ahead > 0:
                            await asyncio.sleep(ahead)
                    for value in pending:
                        await raw.send_and_wait(topic, value=value, key=b"junk|tail")
            finally:
                await raw.stop()

        try:
            asyncio.run(paced())
        except BaseException as error:  # noqa: BLE001 - re-raised on exit
            self.error = error
