"""Resolve where Kafka and PostgreSQL are: external (settings) or embedded (started on demand).

`running_services` is what every long-running command uses: it starts the embedded services that
are not already running, yields their addresses, and on exit stops exactly what it started.
`donorcast up` starts them detached instead, and then every later command finds and reuses them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from infra.errors import DatabaseUnavailable, KafkaUnavailable
from infra.kafka import EmbeddedKafka, check_reachable, ensure_topics_sync
from infra.postgres import EmbeddedPostgres
from infra.settings import Settings


@dataclass
class Endpoints:
    """Where the services are. `settings` is the caller's Settings with these real addresses filled
    in: what a worker process is launched with (`infra.workers.spawn_worker`)."""

    settings: Settings
    kafka_bootstrap: str | None = None
    database_url: str | None = None
    started: list[str] = field(default_factory=list)


def start_kafka(settings: Settings, *, detach: bool) -> tuple[str, bool]:
    """(bootstrap, started_now). External clusters are checked, never started."""
    if settings.kafka_bootstrap is not None:
        check_reachable(settings.kafka_bootstrap)
        return settings.kafka_bootstrap, False
    broker = EmbeddedKafka(settings)
    already = broker.running()
    record = already or broker.start(detach=detach)
    return record.url, already is None


def start_postgres(settings: Settings, *, detach: bool) -> tuple[str, bool]:
    if settings.database_url is not None:
        return settings.database_url, False
    server = EmbeddedPostgres(settings)
    already = server.running()
    record = already or server.start(detach=detach)
    return record.url, already is None


@contextlib.contextmanager
def running_services(
    settings: Settings, *, kafka: bool = True, postgres: bool = True, keep: bool = False
) -> Iterator[Endpoints]:
    """`keep=True` leaves what it had to start running afterwards, as `donorcast up` would: a
    producer's messages must outlive the producer (the embedded broker keeps topics in memory)."""
    endpoints = Endpoints(settings)
    try:
        if kafka:
            endpoints.kafka_bootstrap, started = start_kafka(settings, detach=keep)
            if started:
                endpoints.started.append("kafka")
            ensure_topics_sync(endpoints.kafka_bootstrap, settings)
        if postgres:
            endpoints.database_url, started = start_postgres(settings, detach=True)
            if started:
                endpoints.started.append("postgres")
        endpoints.settings = settings.model_copy(update={"kafka_bootstrap": endpoints.kafka_bootstrap,
                                                         "database_url": endpoints.database_url})
        yield endpoints
    finally:
        if not keep and "kafka" in endpoints.started:
            EmbeddedKafka(settings).stop()
        if not keep and "postgres" in endpoints.started:
            EmbeddedPostgres(settings).stop()


def resolve_bootstrap(settings: Settings) -> str:
    """settings.kafka_bootstrap, else the running embedded broker's address (a worker started by hand
    finds what `donorcast up` left running); never starts anything."""
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    record = EmbeddedKafka(settings).running()
    if record is None:
        raise KafkaUnavailable(
            f"no Kafka: set DONORCAST_KAFKA_BOOTSTRAP, or start the embedded broker with "
            f"`donorcast up` (state dir {settings.state_dir}), or run `donorcast worker`, which starts it"
        )
    return record.url


def resolve_database_url(settings: Settings) -> str:
    """settings.database_url, else the running embedded PostgreSQL's URL; never starts anything."""
    if settings.database_url:
        return settings.database_url
    record = EmbeddedPostgres(settings).running()
    if record is None:
        raise DatabaseUnavailable(
            f"no PostgreSQL: set DONORCAST_DATABASE_URL, or start the embedded server with "
            f"`donorcast up` (state dir {settings.state_dir}), or run `donorcast worker`, which starts it"
        )
    return record.url
