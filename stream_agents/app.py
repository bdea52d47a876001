"""The faust-streaming app: chat-messages -> viewer sequences -> donor-scores, PostgreSQL and HTTP.

Run it::

    donorcast worker [--workers N]          # starts embedded Kafka/PostgreSQL if not configured
    python -m stream_agents worker -l info  # one worker; addresses from DONORCAST_* settings
    faust -A stream_agents.app worker       # the same, through faust's own CLI

`create_app(settings, bootstrap)` builds a fresh app with no global state; the module attribute
`stream_agents.app.app` exists only for faust's `-A` option and is built on first access from
`load_settings()` (see `__getattr__` below).

Top to bottom, `create_app` declares: topics (chat-messages in; donor-scores and dead-letters out),
the changelog-backed tables (`viewer_to_sequence` and `viewer_slot_to_message` hold the viewer
sequences, see `sequences.py`; `partition_to_offset` the newest chat-messages offset applied per
partition), the runtime the agents share (model runner, leaderboards, metrics, history cache), the
embedded broker's recovery (`recovery/`, only on Tansu), the agents and timers (`agents.py`) and the
HTTP views (`views.py`).

Scale-out
---------
Work is split by chat-messages partition: a viewer's messages, sequence rows (both tables use the
partition of the "stream|viewer" key) and scores all live on one partition, so workers never talk
to each other. To use more cores, run more worker processes (`donorcast worker --workers N`, one
per core): they join one consumer group, faust's assignor splits the partitions, and a worker that
dies hands its partitions to the others, which rebuild its table partitions from the changelogs.
A partition a worker keeps through the rebalance keeps its rows as they are; only partitions new to
it are replayed (`HeldPartitionsStore`).
Parallelism is capped by `DONORCAST_TOPIC_PARTITIONS` (default 4); choose it before the topics are
created (Tansu cannot add partitions; on Kafka, adding partitions later remaps keys, so recreate
the topics instead).

The same code runs against a real multi-broker Kafka cluster: set DONORCAST_KAFKA_BOOTSTRAP to the
brokers (host:port,host:port), create the topics with a replication factor of 3 and
`min.insync.replicas=2` (the changelog topics faust creates follow `topic_replication_factor`,
set it to 3 there), and start workers on as many machines as there are partitions. The Tansu
correction (`infra.tansu_compat`) and the recovery (`recovery/`) are only switched on when the broker
reports a Tansu cluster id (`infra.kafka.is_tansu`).
Processing is at-least-once (exactly-once needs transactional producers, which Tansu rejects);
every sink is idempotent, so redelivery after a crash changes nothing.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import faust
from faust.exceptions import ConsumerNotStarted
from faust.stores.memory import Store as MemoryStore
from yarl import URL

from dashboard import register_dashboard
from dashboard.access import url_host
from infra.events import DeadLetter, DonorScore
from infra.kafka import is_tansu, partition_for_key
from infra.services import resolve_bootstrap, resolve_database_url
from infra.settings import Settings, load_settings
from infra.topics import CHAT_MESSAGES, DEAD_LETTERS, DONOR_SCORES, partitions_of, topic_name, viewer_key
from models.registry import ModelRegistry
from stream_agents.agents import register_agents
from stream_agents.metrics import Metrics
from stream_agents.persist import PostgresSink
from stream_agents.pipeline import Runtime
from stream_agents.recovery import Recovery
from stream_agents.score import Loader, ModelRunner, default_loader
from stream_agents.sequences import SequenceStore, viewer_key_of_slot
from stream_agents.views import register_views


class HeldPartitionsStore(MemoryStore):
    """faust's memory store, except that a rebalance which hands the worker back a partition it already
    held keeps that partition's rows instead of replaying its changelog over them.

    faust revokes every partition in a rebalance and, for a memory store, reads each active changelog
    partition again from its first record up to the end it measured, on top of the rows in memory.
    Those rows were newer than anything that replay could bring; the two-worker failover drill
    (tests/test_stream_agents/test_two_workers.py) saw the survivor lose a whole micro-batch of its
    own partitions that way, about 1 run in 7: messages gone from 8 viewers' sequences while the
    applied offset said they were done. And the replay grows with the log, on every rebalance.

    So the store reports, per changelog partition it holds, the offset of the newest row it has (a
    write the broker acknowledged, or a replayed record) as faust's "persisted offset", which is
    where faust's recovery starts reading. A partition newly assigned starts from nothing (faust
    replays it whole), and an acknowledgement for it that arrives before its recovery ends (a write
    from an earlier time this worker held it) is ignored."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.held: dict[Any, int] = {}  # changelog TopicPartition -> newest offset of a row held

    def persisted_offset(self, tp: Any) -> int | None:
        return self.held.get(tp)

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        if tp in self.held:
            self.held[tp] = max(self.held[tp], offset)

    def forget_held(self) -> None:
        """The changelogs were recreated (the embedded broker lost its storage): offsets start again."""
        self.held.clear()

    def apply_changelog_batch(self, batch: Any, to_key: Any, to_value: Any) -> None:
        events = list(batch)
        super().apply_changelog_batch(events, to_key, to_value)
        for event in events:
            tp = event.message.tp
            self.held[tp] = max(self.held.get(tp, -1), event.message.offset)

    async def on_rebalance(self, assigned: Any, revoked: Any, newly_assigned: Any, generation_id: int = 0) -> None:
        kept = {(tp.topic, tp.partition) for tp in assigned} - {(tp.topic, tp.partition) for tp in newly_assigned}
        self.held = {tp: offset for tp, offset in self.held.items() if (tp.topic, tp.partition) in kept}

    async def on_recovery_completed(self, active_tps: Any, standby_tps: Any) -> None:
        await super().on_recovery_completed(active_tps, standby_tps)
        changelog = self.table.changelog_topic.get_topic_name()
        for tp in active_tps:
            if tp.topic == changelog:
                self.held.setdefault(tp, -1)  # an empty changelog partition: every later write counts


class HeldPartitionsTable(faust.Table):
    def _new_store(self) -> Any:
        return HeldPartitionsStore(URL("memory://"), self.app, self, table_name=self.name, key_type=self.key_type,
                                   key_serializer=self.key_serializer, value_serializer=self.value_serializer,
                                   value_type=self.value_type, loop=self.loop, options=self.options)


class ViewerTable(HeldPartitionsTable):
    """A Table whose rows live on the chat-messages partition of their "stream|viewer" key.

    faust would otherwise use the partition of the event being processed, which in a micro-batch
    spanning partitions is the batch's last event; computing it from the key also lets timers
    (expiry) delete rows outside of any event."""

    slot_keys = False  # True: keys are "stream|viewer<US>slot" (viewer_slot_to_message)

    def partition_for_key(self, key: Any) -> int:
        viewer = viewer_key_of_slot(key) if self.slot_keys else key
        return partition_for_key(viewer.encode(), self.partitions)


class SlotTable(ViewerTable):
    slot_keys = True


class PartitionTable(HeldPartitionsTable):
    """Keys are chat-messages partition numbers: each row lives on its own partition."""

    def partition_for_key(self, key: Any) -> int:
        return int(key)


class _BufferMarker:
    """Put at the end of faust's producer buffer: reached once everything queued before it went to aiokafka.
    The buffer's task calls `fut.message.channel.publish_message(fut)` on each entry, one at a time."""

    def __init__(self) -> None:
        self.reached: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.message = self.channel = self

    async def publish_message(self, fut: Any, wait: bool = False) -> None:
        if not self.reached.done():
            self.reached.set_result(None)


async def drain_producer(producer: Any) -> None:
    """Return once the broker acknowledged every record sent so far, table writes included.

    faust's `Producer.flush` is not that: table writes wait in its buffer for one background task, and
    the buffer's flush gives up as soon as 0.1 s pass without a send (faust-streaming 0.15.3,
    `ProducerBuffer.flush_atmost`). On a loaded machine it returned with header rows still queued, the
    applied offset queued behind them overtook them in aiokafka (another topic, not muted), and a
    kill -9 then left an offset past headers the broker never got (CI: the two-worker drill). The
    buffer is first in, first out, so the marker is reached only after everything before it was
    handed to aiokafka, whose flush then waits for the broker's acknowledgement of all of it."""
    if producer.app.conf.producer_threaded:  # the marker rides faust's in-loop queue, which this mode bypasses
        raise RuntimeError("drain_producer needs producer_threaded=False")
    if producer.buffer.state != "running":  # agent.test_context(), or shutting down: nothing is being sent
        return
    marker = _BufferMarker()
    producer.buffer.put(marker)
    await marker.reached
    await producer.flush()


def _table(app: faust.App, cls: type[faust.Table], name: str, partitions: int, help: str) -> Any:
    return app.tables.add(cls(
        app, name=name, beacon=app.tables.beacon, partitions=partitions, help=help,
        key_type=str, value_type=bytes,  # faust picks json for str keys and raw bytes for values
    ))


def create_app(
    settings: Settings,
    bootstrap: str,
    *,
    database_url: str | None = None,
    registry: ModelRegistry | None = None,
    loader: Loader = default_loader,
) -> faust.App:
    """A worker app for these settings. `database_url` defaults to settings.database_url; without
    one the worker scores without PostgreSQL (no sink, no history)."""
    tansu = is_tansu(settings, bootstrap)
    if tansu:
        from infra import tansu_compat

        tansu_compat.install()  # before the app starts: see infra/tansu_compat.py
    partitions = settings.topic_partitions
    datadir = Path(settings.state_dir) / "worker" / f"port-{settings.web_port}"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{settings.topic_prefix}donorcast",
        broker=f"kafka://{bootstrap}",
        store="memory://",  # tables are rebuilt from their changelog topics on start
        topic_partitions=partitions,
        topic_replication_factor=1,
        processing_guarantee="at_least_once",  # exactly_once needs InitProducerId v1+, which aiokafka lacks
        consumer_auto_offset_reset="earliest",  # never "latest": Tansu's ListOffsets is wrong
        broker_session_timeout=3,  # Tansu makes a joining member wait ~session/2
        broker_heartbeat_interval=0.5,
        broker_rebalance_timeout=3,
        table_standby_replicas=0,
        web_host=url_host(settings.web_host),  # faust's canonical URL: IPv6 in brackets
        web_bind=settings.web_host,  # the socket's address; --web-bind may change it (checked before listening)
        web_port=settings.web_port,
        # faust's own views show table contents and routing: off (the dashboard's access rules 404 them too)
        web_router_enabled=False, web_tables_enabled=False, web_stats_enabled=False, web_graph_enabled=False,
        web_metrics_enabled=False,
        datadir=str(datadir),
        autodiscover=False,
    )
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    chat_messages = app.topic(topic_name(CHAT_MESSAGES, settings), partitions=partitions_of(CHAT_MESSAGES, settings), **raw)
    donor_scores = app.topic(topic_name(DONOR_SCORES, settings), partitions=partitions_of(DONOR_SCORES, settings), **raw)
    dead_letters = app.topic(topic_name(DEAD_LETTERS, settings), partitions=partitions_of(DEAD_LETTERS, settings), **raw)

    headers = _table(app, ViewerTable, "viewer_to_sequence", partitions, "stream|viewer -> ViewerSequence")
    slots = _table(app, SlotTable, "viewer_slot_to_message", partitions, "stream|viewer<US>slot -> StoredMessage")
    applied = _table(app, PartitionTable, "partition_to_offset", partitions, "partition -> newest offset applied")

    metrics = Metrics()

    def delivered(score: DonorScore) -> Any:
        def on_delivery(_: Any) -> None:
            if score.produced_at is not None:
                metrics.observe_latency(time.time() - score.produced_at)
        return on_delivery

    async def send_score(score: DonorScore) -> None:
        await donor_scores.send(key=viewer_key(score.stream_id, score.viewer_id),
                                value=score.model_dump_json().encode(), callback=delivered(score))

    async def send_dead_letter(letter: DeadLetter) -> None:
        await dead_letters.send(key=letter.source.encode(), value=letter.model_dump_json().encode())

    def holds(partition: int) -> bool:
        try:
            assignment = app.consumer.assignment()
        except ConsumerNotStarted:  # agent.test_context(): no consumer group, every partition is ours
            return True
        return any(tp.partition == partition and tp.topic == chat_messages.get_topic_name() for tp in assignment)

    def owns(key: str) -> bool:
        return holds(partition_for_key(key.encode(), partitions))

    rt = Runtime(
        settings=settings,
        store=SequenceStore(headers, slots, settings.sequence_length),
        models=ModelRunner(registry or ModelRegistry(settings.registry_dir), threads=settings.worker_threads,
                           loader=loader, on_load=lambda model: metrics.set_model(model.version)),
        metrics=metrics,
        send_score=send_score,
        send_dead_letter=send_dead_letter,
        owns=owns,
        settle=lambda: drain_producer(app.producer),
        database_url=database_url or settings.database_url,
        offsets=applied,
    )
    if tansu:
        rt.recovery = Recovery.build(app, rt, bootstrap=bootstrap, chat_topic=chat_messages.get_topic_name(),
                                     tables=(headers, slots, applied), owned={donor_scores.get_topic_name()})
    database_url = rt.database_url
    sink = None
    if database_url:
        sink = PostgresSink(
            bootstrap=bootstrap, database_url=database_url,
            topics=(chat_messages.get_topic_name(), donor_scores.get_topic_name()),
            group_id=f"{app.conf.id}-persist", metrics=metrics, send_dead_letter=send_dead_letter,
        )
        if rt.recovery is not None:
            rt.recovery.attach_sink(sink)
    register_agents(app, rt, chat_messages, sink)
    if rt.recovery is not None:
        rt.recovery.register(app, chat_messages.get_topic_name())
    register_views(app, rt, sink)
    register_shutdown(app, rt)
    register_dashboard(app, settings, database_url, runtime=rt)  # page + JSON API + live feed (dashboard/)
    app.runtime = rt  # type: ignore[attr-defined] - for views added later (dashboard) and tests
    return app


def register_shutdown(app: faust.App, rt: Runtime) -> None:
    @app.on_before_shutdown.connect
    async def close_resources(sender: faust.App, **kwargs: object) -> None:
        if rt.pool is not None:
            await rt.pool.close()
        rt.models.close()


def app_from_environment(**overrides: object) -> faust.App:
    """The app for `python -m stream_agents` and `faust -A`: settings from DONORCAST_* and the config file,
    Kafka and PostgreSQL from the settings or the embedded services `donorcast up` left running."""
    settings = load_settings(**overrides)
    try:
        database_url: str | None = resolve_database_url(settings)
    except Exception:  # noqa: BLE001 - no PostgreSQL: the worker still scores to Kafka
        database_url = None
    return create_app(settings, resolve_bootstrap(settings), database_url=database_url)


_built: dict[str, faust.App] = {}


def __getattr__(name: str) -> faust.App:
    # `faust -A stream_agents.app` looks up the attribute `app`: build it on first access only,
    # so importing this module (tests, create_app users) never connects anywhere.
    if name == "app":
        if "app" not in _built:
            _built["app"] = app_from_environment()
        return _built["app"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
