"""Where the worker's Kafka and PostgreSQL are, whether the broker is Tansu, and which partition a key is on.

The worker is normally started by `donorcast worker`, which passes explicit addresses. Started any other
way (`python -m stream_agents worker`, `faust -A stream_agents.app worker`) it finds the embedded services
that `donorcast up` left running, or says which setting to set.

Tansu is recognised by the cluster id it reports in Metadata v2+ ("tansu_cluster" unless configured;
"tansu-<random>" per start of our embedded broker, see infra/kafka.py);
it needs `infra.tansu_compat.install()` (see broker-feasibility notes: ListOffsets bug).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools

from infra.errors import DatabaseUnavailable, KafkaUnavailable
from infra.kafka import cluster_id
from infra.settings import Settings

TANSU_CLUSTER_PREFIX = "tansu"


@functools.lru_cache(maxsize=262_144)
def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as aiokafka and the Java client) picks for `key`."""
    from aiokafka.partitioner import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions


def resolve_bootstrap(settings: Settings) -> str:
    """settings.kafka_bootstrap, else the running embedded broker's address."""
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    from infra.kafka import EmbeddedKafka

    record = EmbeddedKafka(settings).running()
    if record is None:
        raise KafkaUnavailable(
            f"no Kafka: set DONORCAST_KAFKA_BOOTSTRAP, or start the embedded broker with "
            f"`donorcast up` (state dir {settings.state_dir}), or run `donorcast worker`, which starts it"
        )
    return record.url


def resolve_database_url(settings: Settings) -> str:
    """settings.database_url, else the running embedded PostgreSQL's URL."""
    if settings.database_url:
        return settings.database_url
    from infra.postgres import EmbeddedPostgres

    record = EmbeddedPostgres(settings).running()
    if record is None:
        raise DatabaseUnavailable(
            f"no PostgreSQL: set DONORCAST_DATABASE_URL, or start the embedded server with "
            f"`donorcast up` (state dir {settings.state_dir}), or run `donorcast worker`, which starts it"
        )
    return record.url


def is_tansu(settings: Settings, bootstrap: str) -> bool:
    """True for the embedded broker, or any broker whose cluster id says Tansu."""
    if settings.uses_embedded_kafka:
        return True
    # Runs in its own thread so that it also works when called from inside a running event loop.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        try:
            found = pool.submit(asyncio.run, cluster_id(bootstrap)).result()
        except Exception as error:  # noqa: BLE001 - unreachable now is reported by faust at start, clearly
            raise KafkaUnavailable(f"cannot reach Kafka at {bootstrap}: {error}") from None
    return bool(found and found.lower().startswith(TANSU_CLUSTER_PREFIX))
