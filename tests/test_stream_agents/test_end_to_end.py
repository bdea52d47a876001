"""End to end with the real demo model (trained once per session on simulated streams): a simulated
stream replayed at max speed plus malformed records, through a real worker process, Tansu and PostgreSQL."""

from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path

import pytest

from infra.events import DeadLetter, DonorScore
from infra.settings import Settings, load_settings
from infra.topics import DEAD_LETTERS, DONOR_SCORES
from tests.test_stream_agents.harness import MALFORMED, postgres_state, publish, read_topic, score_key

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def demo_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model (training.demo_model), trained once for the whole session."""
    from training.demo_model import ensure_demo_model

    settings = load_settings(state_dir=tmp_path_factory.mktemp("demo-model"))
    ensure_demo_model(settings, progress=False)
    return settings.registry_dir


async def test_simulated_stream_end_to_end(topics: Settings, demo_registry: Path, worker_factory, pool,
                                          tmp_path: Path) -> None:
    from producers.simulator import simulate

    shutil.copytree(demo_registry, topics.registry_dir)
    (stream,) = simulate(1, seed=77, viewers=250, minutes=30)
    messages = stream.messages
    worker = worker_factory(model_double=False)
    worker.wait_ready(timeout=120)

    started = time.monotonic()
    await publish(topics, messages, raw=MALFORMED)
    total = len(messages) + len(MALFORMED)
    summary = worker.wait_until(lambda s: s["records_in"] >= total and s["lag"] == 0, 300, "the whole replay")
    elapsed = time.monotonic() - started
    print(f"\n{total} records in {elapsed:.1f} s = {total / elapsed:.0f} records/s end to end; "
          f"latency {summary['latency_ms']}; {summary['messages']}")

    # Every record is accounted for, exactly once.
    counted = summary["messages"]
    assert sum(counted.values()) == summary["records_in"] == total
    assert counted["dead_letter"] == len(MALFORMED) and counted["duplicate"] == 0
    assert counted["paid"] == sum(1 for m in messages if m.is_paid)
    assert counted["sequenced"] == sum(1 for m in messages if m.is_model_input)

    letters = [DeadLetter.model_validate_json(r.value) for r in await read_topic(topics, DEAD_LETTERS, expect=len(MALFORMED))]
    assert sorted(letter.raw.encode() for letter in letters) == sorted(MALFORMED)
    assert all(letter.reason and "chat-messages[" in letter.location for letter in letters)

    # Every viewer with input messages has a score.
    scores = [DonorScore.model_validate_json(r.value) for r in await read_topic(topics, DONOR_SCORES)]
    chatters = {m.viewer_id for m in messages if m.is_model_input}
    assert {s.viewer_id for s in scores} == chatters
    assert {s.model_version for s in scores} == {summary["model_version"]}

    # PostgreSQL holds the same scores as the topic, and every message once.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = await postgres_state(pool)
        if state["score_keys"] == {score_key(s) for s in scores} and state["messages"] == len(messages):
            break
        time.sleep(0.5)
    assert state["score_keys"] == {score_key(s) for s in scores}
    assert state["messages"] == state["distinct_messages"] == len(messages)

    # Donors rank higher than everyone else on average (final leaderboard of the stream).
    board = worker.get(f"/streams/{stream.stream_id}/leaderboard?k=1000")
    donors = stream.donor_ids
    donor_p = [e["probability"] for e in board if e["viewer_id"] in donors]
    other_p = [e["probability"] for e in board if e["viewer_id"] not in donors]
    donor_rank = statistics.mean(e["rank"] for e in board if e["viewer_id"] in donors)
    other_rank = statistics.mean(e["rank"] for e in board if e["viewer_id"] not in donors)
    print(f"donors: mean p {statistics.mean(donor_p):.3f}, mean rank {donor_rank:.0f}; "
          f"others: mean p {statistics.mean(other_p):.3f}, mean rank {other_rank:.0f} of {len(board)}")
    assert statistics.mean(donor_p) > statistics.mean(other_p)
    assert donor_rank < other_rank

    # The HTTP scoring endpoint runs the same path: a donor's own messages score as the agents scored them.
    donor = next(e for e in board if e["viewer_id"] in donors)
    held = worker.get(f"/streams/{stream.stream_id}/viewer?viewer_id={donor['viewer_id']}")
    posted = [{"text": m["text"], "timestamp": m["time"], "offset_seconds": m["seconds_since_start"],
               "message_id": m["message_id"]} for m in held["messages"]]
    status, answer = worker.post("/score", {"messages": posted})
    assert status == 200 and answer["model_version"] == summary["model_version"]
    if held["count"] <= len(posted):
        # The whole history fits the window: the same inputs, so the same score (the int8 encoder is
        # batch-invariant; the agents embedded these messages in other batches than this request).
        assert answer["probability"] == pytest.approx(donor["probability"], abs=1e-4)

    # Offline `score --at each-message` is the live path: every score the agents published (one per
    # viewer per micro-batch) is the offline row after the same number of that viewer's messages.
    from models.registry import ModelRegistry
    from models.scorer import DonorScorer
    from producers.simulator import write_chat_downloader_json
    from training.batch_score import score_files

    version = ModelRegistry(topics.registry_dir).get(summary["model_version"])
    out = tmp_path / "each-message.jsonl"
    score_files([write_chat_downloader_json(stream, tmp_path / f"{stream.stream_id}.json")], DonorScorer.load(version),
                out, at="each-message")
    offline = {(r["viewer_id"], r["n_messages"]): r["score"] for r in map(json.loads, out.read_text().splitlines())}
    gaps = [abs(s.probability - offline[(s.viewer_id, s.n_messages)]) for s in scores]
    print(f"live vs offline each-message: {len(gaps)} scores, max |diff| {max(gaps):.2e}")
    assert max(gaps) <= 1e-4

