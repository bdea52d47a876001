"""A minimal faust app with a changelog-backed table, run as a real worker process by
test_faust_recovery.py. Configuration comes from the environment the test sets."""

from __future__ import annotations

import os

import faust

from infra import tansu_compat

if os.environ.get("COUNTER_TANSU_FIX", "1") == "1":
    tansu_compat.install()

PREFIX = os.environ["COUNTER_PREFIX"]

app = faust.App(
    f"{PREFIX}counter",
    broker=f"kafka://{os.environ['COUNTER_BOOTSTRAP']}",
    store="memory://",
    topic_partitions=4,
    topic_replication_factor=1,
    processing_guarantee="at_least_once",
    consumer_auto_offset_reset="earliest",
    broker_session_timeout=3,
    broker_heartbeat_interval=0.5,
    broker_rebalance_timeout=3,
    broker_commit_interval=0.5,
    web_port=int(os.environ["COUNTER_WEB_PORT"]),
    web_host="127.0.0.1",
    datadir=os.environ["COUNTER_DATADIR"],
)
events = app.topic(
    f"{PREFIX}counter-in", key_type=str, value_type=bytes, key_serializer="raw", value_serializer="raw", partitions=4
)
# value: [count, offset of the last event counted]. At-least-once delivery replays the last
# un-acked event of each partition after a kill -9; the offset makes the update idempotent, the
# same pattern the stream agents use, so any difference left is a recovery error.
key_to_count = app.Table("key_to_count", default=lambda: [0, -1], partitions=4)


@app.agent(events)
async def count_events(stream: faust.StreamT[bytes]) -> None:
    async for event in stream.events():
        count, last_offset = key_to_count[event.key]
        if event.message.offset > last_offset:
            key_to_count[event.key] = [count + 1, event.message.offset]


@app.page("/counts/")
async def counts(web: faust.web.Web, request: faust.web.Request) -> faust.web.Response:
    return web.json({key: value[0] for key, value in key_to_count.items()})


if __name__ == "__main__":
    app.main()
