"""Two workers split the partitions; when one is killed the other rebuilds its table partitions
(both tables are co-partitioned with chat-messages) and the sequences are exact."""

from __future__ import annotations

import pytest

from infra.settings import Settings
from tests.test_drills.worker_support import reported_on_failure
from tests.test_stream_agents.harness import BackgroundPublisher, reference_sequences, synthetic_stream
from tests.test_stream_agents.scorer_double import promote_double

pytestmark = pytest.mark.slow


def held(worker, stream: str) -> dict[str, list[str]]:
    return {v: h["message_ids"] for v, h in worker.get(f"/streams/{stream}/sequences").items()}


async def test_a_killed_workers_partitions_move_with_their_sequences(topics: Settings, worker_factory) -> None:
    settings = topics.model_copy(update={"sequence_length": 5})
    promote_double(settings.registry_dir)
    messages = synthetic_stream("s1", viewers=80, messages=1600, donors=8, seed=11)
    reference = {v: ids for (_, v), ids in reference_sequences(messages, 5).items()}
    first = worker_factory(settings=settings)
    second = worker_factory(settings=settings)
    first.wait_ready()
    second.wait_ready()
    with BackgroundPublisher(settings, messages, rate=300):
        for worker in (first, second):  # both get partitions and work
            worker.wait_until(lambda s: s["records_in"] > 100, 60, "both workers to process", poll=0.2)
        split = (set(held(first, "s1")), set(held(second, "s1")))
        assert split[0] and split[1] and not split[0] & split[1]
        second.kill9()
    # Failed once in ~7 fresh runs (8 viewers each missing one message published during the rebalance):
    # the survivor's log goes with any failure, so the next one can be traced.
    with reported_on_failure([first, second]):
        try:
            first.wait_until(lambda s: held(first, "s1") == reference, 60, "the survivor to hold every sequence exactly")
        except AssertionError:
            now = held(first, "s1")
            diff = {v: (now.get(v), ids) for v, ids in reference.items() if now.get(v) != ids}
            raise AssertionError(f"{len(diff)} of {len(reference)} differ, e.g. {list(diff.items())[:3]}") from None
