"""A model promoted during a replay is served without a restart, and every score names its version."""

from __future__ import annotations

import pytest

from infra.events import DonorScore
from infra.settings import Settings
from infra.topics import DONOR_SCORES
from tests.test_stream_agents.harness import (
    BackgroundPublisher,
    read_topic,
    reference_sequences,
    synthetic_stream,
)
from tests.test_stream_agents.scorer_double import promote_double

pytestmark = pytest.mark.slow


async def test_promotion_during_replay_is_picked_up_without_restart(topics: Settings, worker_factory) -> None:
    first = promote_double(topics.registry_dir)
    messages = synthetic_stream("s1", viewers=50, messages=1500, donors=6, seed=7)
    worker = worker_factory()
    worker.wait_ready()
    pid = worker.process.pid
    with BackgroundPublisher(topics, messages, rate=300):
        worker.wait_until(lambda s: s["records_in"] >= 400, 60, "part of the replay", poll=0.1)
        # Another encoder too (the double's embedding space is its version): stored windows are re-embedded.
        second = promote_double(topics.registry_dir, bias=2.0)
        worker.wait_until(lambda s: s["model_version"] == second.version, 30, "the new model to be served")
    summary = worker.wait_until(lambda s: s["records_in"] >= len(messages), 90, "the whole replay")
    assert worker.process.pid == pid and worker.process.poll() is None  # same process: no restart

    scores = [DonorScore.model_validate_json(r.value) for r in await read_topic(topics, DONOR_SCORES)]
    versions = [s.model_version for s in scores]
    assert set(versions) == {first.version, second.version}
    per_viewer: dict[str, list[str]] = {}
    for score in scores:  # in offset order within a partition, and a viewer lives on one partition
        per_viewer.setdefault(score.viewer_id, []).append(score.model_version)
    for history in per_viewer.values():  # once a viewer is scored by the new model, never by the old one
        assert history == sorted(history, key=lambda v: v == second.version)
    # The double's second version adds 2 to every logit: its scores are visibly higher.
    mean = {v: sum(s.probability for s in scores if s.model_version == v) / versions.count(v)
            for v in (first.version, second.version)}
    assert mean[second.version] > mean[first.version] + 0.2
    reference = reference_sequences(messages, topics.sequence_length)
    held = worker.get("/streams/s1/sequences")
    assert {v: h["message_ids"] for v, h in held.items() if h["message_ids"]} == {v: ids for (_, v), ids in reference.items()}
    assert summary["embedded"] > summary["messages"]["sequenced"]  # windows re-embedded for the new encoder
