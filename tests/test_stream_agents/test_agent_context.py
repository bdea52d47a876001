"""The scoring agent's logic through faust's own test harness (agent.test_context(), in-memory channel):
validation, outcomes, sequences in the two tables, duplicate suppression, scores with ranks."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from infra.events import DeadLetter, DonorScore
from infra.settings import load_settings
from stream_agents.app import create_app
from tests.test_stream_agents.harness import synthetic_stream
from tests.test_stream_agents.scorer_double import load_double, promote_double


async def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_agent_builds_sequences_scores_and_skips_redelivered_records(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path, kafka_bootstrap=kafka_bootstrap, topic_prefix=f"u{uuid.uuid4().hex[:6]}-",
                             sequence_length=3, embed_batch_size=8, embed_batch_wait=0.01)
    promote_double(settings.registry_dir)
    app = create_app(settings, kafka_bootstrap, loader=load_double)
    rt = app.runtime
    scores: list[DonorScore] = []
    letters: list[DeadLetter] = []

    async def keep_score(score: DonorScore) -> None:
        scores.append(score)

    async def keep_letter(letter: DeadLetter) -> None:
        letters.append(letter)

    rt.send_score, rt.send_dead_letter = keep_score, keep_letter
    rt.owns = lambda key: True  # no consumer group in a test context: every key is ours
    rt.recovery = None  # nor committed offsets: the in-memory channel delivers every record
    messages = synthetic_stream("s1", viewers=4, messages=30, donors=1, seed=1)
    agent = app.agents["score_chat_messages"]
    async with agent.test_context() as ctx:
        for message in messages:
            await ctx.put(message.model_dump_json().encode(), key=f"s1|{message.viewer_id}".encode(), wait=False)
        await ctx.put(b"{not json", key=b"x", wait=False)
        await wait_for(lambda: rt.metrics.summary()["records_in"] == len(messages) + 1)
        before = held(rt)
        # Redelivery after a crash: the same records at the same offsets change nothing.
        ctx.sent_offset = 0
        for message in messages[:10]:
            await ctx.put(message.model_dump_json().encode(), key=f"s1|{message.viewer_id}".encode(), wait=False)
        await wait_for(lambda: rt.metrics.summary()["records_in"] == len(messages) + 11)

    summary = rt.metrics.summary()["messages"]
    inputs = [m for m in messages if m.is_model_input]
    assert summary == {"sequenced": len(inputs), "duplicate": 10, "paid": 1, "not_input": 0, "dead_letter": 1}
    assert [letter.location for letter in letters] == [f"{settings.topic_prefix}chat-messages[0]@{len(messages)}"]
    assert letters[0].raw == "{not json" and letters[0].reason
    assert held(rt) == before  # redelivery changed no sequence
    for viewer in {m.viewer_id for m in inputs}:
        key = f"s1|{viewer}"
        header = rt.store.header(key)
        expected = [m.message_id for m in inputs if m.viewer_id == viewer][-3:]
        assert [m.message_id for m in rt.store.window(key, header)] == expected
        assert header.count == sum(1 for m in inputs if m.viewer_id == viewer)
    donor = next(m.viewer_id for m in messages if m.is_paid)
    donor_header = rt.store.header(f"s1|{donor}")
    assert donor_header.paid_events == 1  # recorded once ...
    assert "take my money" not in {m.text for m in rt.store.window(f"s1|{donor}", donor_header)}  # ... never an input
    viewers = {m.viewer_id for m in inputs}
    assert sorted(rt.boards.rank(f"s1|{v}") for v in viewers) == list(range(1, len(viewers) + 1))
    assert rt.boards.rank(f"s1|{donor}") == 1  # the double favours the donor's warm messages
    assert {s.viewer_id for s in scores} == viewers and all(s.model_version for s in scores)


def held(rt) -> dict[str, tuple[int, list[str]]]:
    out = {}
    for key, header in rt.store.items():
        out[key] = (header.count, [m.message_id for m in rt.store.window(key, header)])
    return out
