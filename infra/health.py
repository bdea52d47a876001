"""`donorcast status`: one dict per component, each with a state of healthy | stopped | unhealthy."""

from __future__ import annotations

import asyncio
import urllib.request

from infra.errors import KafkaUnavailable
from infra.kafka import EmbeddedKafka, check_reachable
from infra.postgres import EmbeddedPostgres, describe_url
from infra.settings import Settings

Report = dict[str, dict[str, str]]


def kafka_status(settings: Settings) -> dict[str, str]:
    if settings.kafka_bootstrap is None:
        record = EmbeddedKafka(settings).running()
        if record is None:
            return {"state": "stopped", "where": "embedded", "detail": "start with: donorcast up"}
        bootstrap, where = record.url, f"embedded pid {record.pid}"
    else:
        bootstrap, where = settings.kafka_bootstrap, "external"
    try:
        check_reachable(bootstrap)
    except KafkaUnavailable as error:
        return {"state": "unhealthy", "where": bootstrap, "detail": str(error)}
    return {"state": "healthy", "where": bootstrap, "detail": where}


def postgres_status(settings: Settings) -> dict[str, str]:
    if settings.database_url is None:
        record = EmbeddedPostgres(settings).running()
        if record is None:
            return {"state": "stopped", "where": "embedded", "detail": "start with: donorcast up"}
        url, where = record.url, f"embedded pid {record.pid}"
    else:
        url, where = settings.database_url, "external"
    try:
        version = asyncio.run(_server_version(url))
    except Exception as error:  # noqa: BLE001 - any failure is reported, not raised
        return {"state": "unhealthy", "where": describe_url(url), "detail": f"{type(error).__name__}: {error}"}
    return {"state": "healthy", "where": describe_url(url), "detail": f"{where}, {version}"}


async def _server_version(url: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=5)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def worker_status(settings: Settings) -> dict[str, str]:
    """The worker's own summary, read from its web server's /metrics/summary if one answers."""
    url = f"http://{settings.web_host}:{settings.web_port}/metrics/summary"
    try:
        with urllib.request.urlopen(url, timeout=1.5) as response:  # noqa: S310 - our own loopback URL
            body = response.read().decode()
    except OSError:
        return {"state": "stopped", "where": url, "detail": "no worker answering"}
    return {"state": "healthy", "where": url, "detail": body[:300]}


def collect_status(settings: Settings) -> Report:
    return {
        "kafka": kafka_status(settings),
        "postgres": postgres_status(settings),
        "worker": worker_status(settings),
    }
