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
from tests.test_stream_agents.harness import read_topic, score_key


@dataclass
class Accounting:
    """What became of every produced record."""

    produced: int  # valid messages + malformed records
    stored: int  # valid messages in chat_messages (each once)
    scored_viewers: int  # viewers whose latest score counts every one of their input messages
    inputs_counted: int  # input messages counted into those scores
    paid_stored: int  # paid events stored (outcomes, never model inputs)
    dead_lettered: int  # distinct malformed records in dead-letters, each with a reason
    scores_topic: int  # distinct scores on donor-scores
    scores_postgres: int  # rows in viewer_scores (must equal the topic's)

    def line(self) -> str:
        return (f"{self.produced} produced -> {self.stored} stored once ({self.paid_stored} paid), "
                f"{self.inputs_counted} inputs counted into {self.scored_viewers} viewers' scores, "
                f"{self.dead_lettered} dead-lettered; scores topic {self.scores_topic} = PostgreSQL {self.scores_postgres}")


def expected_inputs(messages: Sequence[ChatMessage]) -> dict[tuple[str, str], int]:
    return dict(Counter((m.stream_id, m.viewer_id) for m in messages if m.is_model_input))


async def wait_rows(pool: asyncpg.Pool, check: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
    """Poll PostgreSQL until `check(state)`; returns the last state either way."""
    deadline = time.monotonic() + timeout
    while True:
        state = {
            "rows": await pool.fetchval("SELECT count(*) FROM chat_messages"),
            "ids": {r["message_id"] for r in await pool.fetch("SELECT message_id FROM chat_messages")},
            "paid": await pool.fetchval("SELECT count(*) FROM chat_messages WHERE kind <> 'text'"),
            "latest": {(r["stream_id"], r["viewer_id"]): r["n_messages"] for r in await pool.fetch(
                "SELECT stream_id, viewer_id, n_messages FROM viewer_scores_latest")},
            "score_keys": {(r["stream_id"], r["viewer_id"], r["event_time"], r["n_messages"], r["model_version"])
                           for r in await pool.fetch("SELECT stream_id, viewer_id, event_time, n_messages, "
                                                     "model_version FROM viewer_scores")},
            "scores": await pool.fetchval("SELECT count(*) FROM viewer_scores"),
        }
        if check(state) or time.monotonic() > deadline:
            return state
        await asyncio.sleep(0.5)


async def account(settings: Settings, pool: asyncpg.Pool, messages: Sequence[ChatMessage],
                  malformed: Sequence[bytes] = (), timeout: float = 90.0) -> Accounting:
    """Every produced record is stored once and counted into its viewer's score, or dead-lettered with
    a reason; nothing else exists. Fails naming what is missing or extra."""
    valid = {m.message_id for m in messages}
    assert len(valid) == len(messages), "the drill's own messages must have unique ids"
    inputs = expected_inputs(messages)
    state = await wait_rows(pool, lambda s: s["ids"] == valid and s["latest"] == inputs, timeout)
    missing, extra = valid - state["ids"], state["ids"] - valid
    assert not missing and not extra, f"{len(missing)} messages never stored (e.g. {sorted(missing)[:5]}), {len(extra)} unknown rows"
    assert state["rows"] == len(valid), f"{state['rows'] - len(valid)} duplicate rows"
    short = {k: (state["latest"].get(k), n) for k, n in inputs.items() if state["latest"].get(k) != n}
    assert not short, f"{len(short)} viewers' latest score does not count all their inputs (got, want): {dict(list(short.items())[:5])}"
    assert set(state["latest"]) == set(inputs), "a score for a viewer with no input message"

    letters = [DeadLetter.model_validate_json(r.value) for r in await read_topic(
        settings, DEAD_LETTERS, expect=len(malformed), timeout=20)] if malformed else []
    assert all(letter.reason.strip() and letter.location for letter in letters)
    assert {letter.raw.encode() for letter in letters} == set(malformed), "a malformed record not dead-lettered"

    topic_scores = {score_key(DonorScore.model_validate_json(r.value)) for r in await read_topic(settings, DONOR_SCORES)}
    state = await wait_rows(pool, lambda s: s["score_keys"] == topic_scores, 30)
    assert state["score_keys"] == topic_scores, (
        f"scores: {len(topic_scores - state['score_keys'])} on the topic only, "
        f"{len(state['score_keys'] - topic_scores)} in PostgreSQL only")
    assert state["scores"] == len(state["score_keys"]), "duplicate score rows"
    return Accounting(
        produced=len(messages) + len(malformed), stored=state["rows"], scored_viewers=len(inputs),
        inputs_counted=sum(inputs.values()), paid_stored=state["paid"], dead_lettered=len(letters),
        scores_topic=len(topic_scores), scores_postgres=state["scores"])


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
    """harness.start_worker for another worker module (same environment, same WorkerProcess)."""
    import os
    import subprocess
    import sys

    from tests.test_stream_agents.harness import REPO_ROOT, WorkerProcess

    env = {k: v for k, v in os.environ.items() if k != "DONORCAST_DATABASE_URL"}
    if settings.database_url:
        env["DONORCAST_DATABASE_URL"] = settings.database_url
    env.update({
        "DONORCAST_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "", "DONORCAST_TOPIC_PREFIX": settings.topic_prefix,
        "DONORCAST_TOPIC_PARTITIONS": str(settings.topic_partitions), "DONORCAST_STATE_DIR": str(settings.state_dir),
        "DONORCAST_WEB_PORT": str(port), "DONORCAST_SEQUENCE_LENGTH": str(settings.sequence_length),
        "PYTHONPATH": str(REPO_ROOT), **(extra_env or {}),
    })
    with open(log_path, "ab") as log:
        process = subprocess.Popen(  # noqa: S603 - our interpreter, fixed argv
            [sys.executable, "-m", module, "worker", "--loglevel", "info"],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    return WorkerProcess(process, port, log_path)
