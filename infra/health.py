"""`donorcast status`: one dict per component, each with a state of healthy | starting | stopped | unhealthy."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.errors import KafkaUnavailable
from infra.kafka import EmbeddedKafka, check_reachable
from infra.postgres import EmbeddedPostgres, describe_url
from infra.settings import Settings

Report = dict[str, dict[str, str]]
STARTUP_SECONDS = 120.0  # a worker whose web server does not answer yet is starting, not broken, this long


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


@dataclass(frozen=True)
class WorkerProcess:
    """A running stream-agents worker and where its web server listens."""

    pid: int
    url: str


def find_workers(settings: Settings, proc: Path = Path("/proc")) -> list[WorkerProcess]:
    """The workers of *this* state dir: `python -m stream_agents worker` (or `faust -A stream_agents...`)
    processes whose DONORCAST_STATE_DIR, resolved against their working directory, is ours. Every
    worker gets its state dir and web port in its environment (`infra.workers.spawn_worker`), so a worker of
    another state dir answering on the default port is never taken for ours."""
    mine = settings.state_dir.resolve()
    found = []
    for entry in sorted(proc.glob("[0-9]*"), key=lambda e: int(e.name)):
        try:
            if not _is_worker((entry / "cmdline").read_bytes().split(b"\0")):
                continue
            env = dict(item.split("=", 1) for item in (entry / "environ").read_bytes().decode(errors="replace")
                       .split("\0") if "=" in item)
            cwd = Path(os.readlink(entry / "cwd"))
        except (OSError, ValueError):  # gone meanwhile, or another user's process
            continue
        state_dir = cwd / env.get("DONORCAST_STATE_DIR", str(Settings.model_fields["state_dir"].default))
        if state_dir.resolve() != mine:
            continue
        host = env.get("DONORCAST_WEB_HOST", settings.web_host)
        port = env.get("DONORCAST_WEB_PORT", str(settings.web_port))
        found.append(WorkerProcess(pid=int(entry.name), url=f"http://{host}:{port}"))
    return found


def _is_worker(argv: list[bytes]) -> bool:
    """`... -m stream_agents worker ...` or `faust -A stream_agents.app worker ...`: the app right before
    the `worker` subcommand (a test run that merely mentions both words is no worker)."""
    return any(arg == b"worker" and b"stream_agents" in argv[i - 1] for i, arg in enumerate(argv) if i > 0)


def worker_status(settings: Settings) -> Report:
    """One row per worker of this state dir, from its web server's /metrics/summary."""
    workers = find_workers(settings)
    if not workers:
        detail = f"no worker of {settings.state_dir} running; start one with: donorcast worker"
        return {"worker": {"state": "stopped", "where": "", "detail": detail}}
    return {("worker" if i == 0 else f"worker {i + 1}"): _one_worker(w) for i, w in enumerate(workers)}


def _one_worker(worker: WorkerProcess) -> dict[str, str]:
    url = f"{worker.url}/metrics/summary"
    try:
        with urllib.request.urlopen(url, timeout=1.5) as response:  # noqa: S310 - our own worker's URL
            summary = json.loads(response.read())
    except (OSError, ValueError) as error:
        age = process_age(worker.pid)
        state = "starting" if age is not None and age < STARTUP_SECONDS else "unhealthy"
        return {"state": state, "where": worker.url,
                "detail": f"pid {worker.pid} (up {_duration(age or 0)}) runs, but {url} does not answer ({error})"}
    health = summary.get("health") or {}
    state = {"ok": "healthy", "starting": "starting"}.get(str(health.get("status")), "unhealthy")
    return {"state": state, "where": worker.url, "detail": describe_worker(worker.pid, summary)}


def process_age(pid: int) -> float | None:
    """Seconds since the process started (Linux /proc), None if unknown."""
    try:
        start_ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def describe_worker(pid: int, summary: dict[str, Any]) -> str:
    """The worker's summary in one readable line (the full JSON: `donorcast status --json`)."""
    latency = summary.get("latency_ms") or {}
    parts = [f"pid {pid}", f"model {summary.get('model_version') or 'none yet'}",
             f"up {_duration(float(summary.get('uptime_s') or 0))}",
             f"{int(summary.get('records_in') or 0):,} records in",
             f"{int(summary.get('scores_published') or 0):,} scores",
             f"{int(summary.get('viewers') or 0):,} viewers", f"lag {int(summary.get('lag') or 0):,}"]
    if latency.get("p99") is not None:
        parts.append(f"p50/p99 {latency['p50']:,.0f}/{latency['p99']:,.0f} ms")
    problems = (summary.get("health") or {}).get("problems") or []
    return " · ".join(parts) + "".join(f"\nproblem: {problem}" for problem in problems)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def collect_status(settings: Settings) -> Report:
    return {"kafka": kafka_status(settings), "postgres": postgres_status(settings), **worker_status(settings)}
