"""`donorcast worker [--workers N]`: start the embedded services if needed, then N worker processes.

Each worker is `python -m stream_agents worker` with explicit addresses in its environment and its
own web port (settings.web_port + i), so one per core runs the pipeline in parallel (see the scale-out
notes in app.py). Ctrl-C or SIGTERM stops the workers, then the services this command started.
A worker that dies is reported; the others take over its partitions.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import subprocess
import sys
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from infra.settings import Settings

console = Console(stderr=True)
STOP_TIMEOUT = 20.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # In the child before exec: the kernel stops the worker if this supervisor dies, even by kill -9.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def worker_environment(settings: Settings, bootstrap: str, database_url: str | None, index: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "DONORCAST_KAFKA_BOOTSTRAP": bootstrap,
        "DONORCAST_STATE_DIR": str(settings.state_dir.resolve()),
        "DONORCAST_WEB_PORT": str(settings.web_port + index if settings.web_port else 0),
    })
    if database_url:
        env["DONORCAST_DATABASE_URL"] = database_url
    return env


def start_worker(env: dict[str, str], loglevel: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "stream_agents", "worker", "--loglevel", loglevel],
        env=env, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
    )


def stop_workers(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _migrate(database_url: str) -> None:
    from infra.postgres import create_pool
    from infra.repository import migrate

    async def run() -> None:
        pool = await create_pool(database_url)
        try:
            await migrate(pool)
        finally:
            await pool.close()

    asyncio.run(run())


def print_where(settings: Settings, bootstrap: str, database_url: str | None,
                processes: list[subprocess.Popen[bytes]]) -> None:
    from dashboard.access import url_host
    from infra.postgres import describe_url
    from models.registry import ModelRegistry

    promoted = ModelRegistry(settings.registry_dir).promoted()
    table = Table("what", "where", title="donorcast worker")
    table.add_row("kafka", bootstrap)
    table.add_row("postgres", describe_url(database_url) if database_url else "none (scores go to Kafka only)")
    table.add_row("model", f"{promoted.version} ({promoted.path})" if promoted else
                  f"none promoted in {settings.registry_dir}: workers wait for one (donorcast fit / demo)")
    for i, process in enumerate(processes):
        port = settings.web_port + i
        table.add_row(f"worker {i} (pid {process.pid})",
                      f"http://{url_host(settings.web_host)}:{port}/healthz  /metrics  /metrics/summary")
    console.print(table)
    console.print("Ctrl-C stops the workers.")


def supervise(processes: list[subprocess.Popen[bytes]]) -> int:
    """Wait until every worker has exited; a worker that dies early is reported once."""
    reported: set[int] = set()
    while True:
        codes = [p.poll() for p in processes]
        for process, code in zip(processes, codes, strict=True):
            if code is not None and process.pid not in reported:
                reported.add(process.pid)
                if any(c is None for c in codes):
                    console.print(f"[yellow]worker pid {process.pid} exited ({code}); the others take over "
                                  "its partitions[/yellow]")
        if all(code is not None for code in codes):
            return max(abs(code or 0) for code in codes)
        time.sleep(0.5)


def worker_command(
    ctx: typer.Context,
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, max=64,
                                         help="worker processes (one per core; at most the partition count is useful)")] = 1,
    loglevel: Annotated[str, typer.Option("--loglevel", "-l", help="faust log level")] = "info",
) -> None:
    """Run the stream agents: chat-messages -> viewer sequences -> donor scores (Kafka, PostgreSQL, HTTP)."""
    from infra.cli import settings_from
    from infra.services import running_services

    settings = settings_from(ctx)
    from dashboard import check_bind

    check_bind(settings)  # before any service starts; each worker checks again on the address it binds
    if workers > settings.topic_partitions:
        console.print(f"[yellow]{workers} workers but {settings.topic_partitions} partitions: "
                      f"{workers - settings.topic_partitions} will stay idle (standby)[/yellow]")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with running_services(settings) as endpoints:
        assert endpoints.kafka_bootstrap is not None
        if endpoints.database_url:
            _migrate(endpoints.database_url)
        processes = [
            start_worker(worker_environment(settings, endpoints.kafka_bootstrap, endpoints.database_url, i), loglevel)
            for i in range(workers)
        ]
        try:
            print_where(settings, endpoints.kafka_bootstrap, endpoints.database_url, processes)
            code = supervise(processes)
        except KeyboardInterrupt:
            console.print("stopping workers ...")
            code = 0
        finally:
            stop_workers(processes)
    if code:
        raise typer.Exit(code)
