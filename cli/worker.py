"""`donorcast worker [--workers N]`: start the embedded services if needed, then N worker processes.

Each worker is `python -m stream_agents worker` with explicit addresses in its environment and its
own web port (settings.web_port + i), so one per core runs the pipeline in parallel (see the scale-out
notes in app.py). Ctrl-C or SIGTERM stops the workers, then the services this command started.
A worker that dies is reported; the others take over its partitions.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from infra.settings import Settings

console = Console(stderr=True)


def worker_port(settings: Settings, index: int) -> int:
    """Worker `index` listens on settings.web_port + index (0 stays 0: any free port)."""
    return settings.web_port + index if settings.web_port else 0


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


def print_where(settings: Settings, processes: list[subprocess.Popen[bytes]]) -> None:
    """`settings` with the real addresses (running_services' copy)."""
    from dashboard.access import url_host
    from infra.postgres import describe_url
    from models.registry import ModelRegistry

    promoted = ModelRegistry(settings.registry_dir).promoted()
    table = Table("what", "where", title="donorcast worker")
    table.add_row("kafka", str(settings.kafka_bootstrap))
    table.add_row("postgres", describe_url(settings.database_url) if settings.database_url
                  else "none (scores go to Kafka only)")
    table.add_row("model", f"{promoted.version} ({promoted.path})" if promoted else
                  f"none promoted in {settings.registry_dir}: workers wait for one (donorcast fit / demo)")
    for i, process in enumerate(processes):
        port = worker_port(settings, i)
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
    from infra.workers import spawn_worker, stop_workers

    settings = settings_from(ctx)
    from dashboard import check_bind

    check_bind(settings)  # before any service starts; each worker checks again on the address it binds
    if workers > settings.topic_partitions:
        console.print(f"[yellow]{workers} workers but {settings.topic_partitions} partitions: "
                      f"{workers - settings.topic_partitions} will stay idle (standby)[/yellow]")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with running_services(settings) as endpoints:
        resolved = endpoints.settings
        if resolved.database_url:
            _migrate(resolved.database_url)
        processes = [
            spawn_worker(resolved.model_copy(update={"web_port": worker_port(resolved, i)}), loglevel=loglevel)
            for i in range(workers)
        ]
        try:
            print_where(resolved, processes)
            code = supervise(processes)
        except KeyboardInterrupt:
            console.print("stopping workers ...")
            code = 0
        finally:
            stop_workers(processes)
    if code:
        raise typer.Exit(code)
