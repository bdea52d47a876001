"""`donorcast demo [--file chat.json]`: the whole system on one machine, with no configuration.

In order, each step a small function below:

1. start what is not configured: the embedded Kafka (Tansu) and PostgreSQL (`infra.services`), and
   apply the SQL migrations;
2. make sure a model is promoted: if none is, train the small demo model on simulated streams
   (`training.demo_model.ensure_demo_model`, a few minutes on 2 cores, with progress);
3. start a worker process (`python -m stream_agents worker`, its log under the state dir) and wait
   until it serves the model; its web server also serves the dashboard;
4. print the dashboard URL, then replay chat into Kafka at `--speed` (20x by default): simulated
   streams (`producers.simulator`), a new set of them each round so the page keeps moving, or the
   streams of `--file` (any chat format the readers know, e.g. chat-downloader JSON);
5. on Ctrl-C (or SIGTERM): stop the replay, the worker, and the services this command started.

Nothing is left running: the worker and the broker are started with a parent-death signal, and the
worker, broker and database are stopped explicitly on the way out.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from infra.errors import InputError, ServiceError
from infra.events import ChatMessage, DeadLetter
from infra.settings import Settings

console = Console(stderr=True)
READY_TIMEOUT = 300.0  # a cold worker loads the encoder and joins the group; slow on a busy 2-core box


# ---------------------------------------------------------------- what is replayed

@dataclass
class ReplayPlan:
    """Which streams each round replays. Simulated: a new seed per round (new stream ids).
    A file: the same streams, renamed per round after the first, so nothing is deduplicated away."""

    speed: float
    loop: bool
    n_streams: int = 3
    seed: int = 0
    viewers: int = 300
    minutes: float = 60.0
    file_sources: list[Any] = field(default_factory=list)  # producers.replay.ReplaySource
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def round(self, index: int) -> tuple[list[Any], dict[str, str]]:
        """(replay sources, stream id -> title) of round `index` (0-based)."""
        from producers.replay import ReplaySource, sources_from_simulation

        if not self.file_sources:
            from producers.simulator import simulate

            streams = simulate(self.n_streams, self.seed + index, viewers=self.viewers, minutes=self.minutes)
            return sources_from_simulation(streams), {s.stream_id: s.title for s in streams}
        if index == 0:
            return list(self.file_sources), {s.stream_id: Path(s.label).name for s in self.file_sources}
        renamed = [ReplaySource(label=f"{s.label} (round {index + 1})", stream_id=f"{s.stream_id}-r{index + 1}",
                                messages=[rename(m, index + 1) for m in s.messages]) for s in self.file_sources]
        return renamed, {s.stream_id: s.label for s in renamed}


def rename(message: ChatMessage, round_number: int) -> ChatMessage:
    return message.model_copy(update={"stream_id": f"{message.stream_id}-r{round_number}",
                                      "message_id": f"{message.message_id}-r{round_number}"})


def read_file(path: Path) -> tuple[list[Any], list[DeadLetter]]:
    from producers.replay import sources_from_file

    sources, rejected = sources_from_file(path)
    if not sources:
        raise InputError(f"{path}: no chat messages could be read ({len(rejected)} record(s) rejected)")
    return sources, rejected


# ---------------------------------------------------------------- services, model, worker

async def _migrate(database_url: str) -> None:
    from infra.postgres import create_pool
    from infra.repository import migrate

    pool = await create_pool(database_url)
    try:
        await migrate(pool)
    finally:
        await pool.close()


def choose_port(settings: Settings) -> int:
    """settings.web_port if it is free, else any free port (another worker may hold 6066)."""
    from infra.kafka import free_port

    if settings.web_port:
        with socket.socket() as sock:
            try:
                sock.bind((settings.web_host, settings.web_port))
                return settings.web_port
            except OSError:
                console.print(f"[yellow]port {settings.web_port} is taken: using another one[/yellow]")
    return free_port(settings.web_host)


def start_worker(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    """The worker on `settings` (real addresses, the chosen port), its output in `log_path`."""
    from infra.workers import spawn_worker

    # Own session: Ctrl-C is the demo's to handle, and it stops the worker in order.
    return spawn_worker(settings, log_path=log_path, new_session=True)


def wait_until_serving(process: subprocess.Popen[bytes], base_url: str, log_path: Path,
                       timeout: float = READY_TIMEOUT) -> dict[str, Any]:
    """Until the worker's /healthz reports a loaded model; raises ServiceError if it dies or hangs."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceError(f"the worker exited with code {process.returncode}; its log "
                               f"({log_path}) ends with:\n{tail(log_path)}")
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as response:  # noqa: S310 - loopback
                last = json.loads(response.read())
            if last.get("status") != "starting":
                return last
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    raise ServiceError(f"the worker did not serve a model within {timeout:.0f} s (last health {last}); "
                       f"see {log_path}:\n{tail(log_path)}")


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def print_welcome(settings: Settings, url: str, log_path: Path, model: str) -> None:
    from rich.panel import Panel

    from dashboard import dashboard_token

    lines = [f"[bold]dashboard[/bold]  [link={url}]{url}[/link]"]
    if dashboard_token(settings):
        lines.append("           add ?token=<your DONORCAST_DASHBOARD_TOKEN> to open it")
    lines += [f"[bold]model[/bold]      {model}",
              f"[bold]JSON API[/bold]   {url.replace('/dashboard/', '/api/')}streams  (see dashboard/__init__.py)",
              "[bold]terminal[/bold]   donorcast watch STREAM_ID",
              f"[bold]worker log[/bold] {log_path}",
              "Ctrl-C stops everything."]
    console.print(Panel("\n".join(lines), title="donorcast demo", expand=False))


# ---------------------------------------------------------------- replaying until Ctrl-C

async def record_titles(database_url: str, titles: dict[str, str]) -> None:
    """Stream titles for the page's picker (the sink creates the stream rows without one)."""
    from infra.postgres import create_pool
    from infra.repository import upsert_stream

    pool = await create_pool(database_url)
    try:
        for stream_id, title in titles.items():
            await upsert_stream(pool, platform="youtube", stream_id=stream_id, title=title, source="demo")
    finally:
        await pool.close()


async def replay_rounds(settings: Settings, plan: ReplayPlan) -> None:
    """`settings` with the real addresses (running_services' copy)."""
    from producers.publisher import KafkaPublisher
    from producers.replay import replay

    assert settings.kafka_bootstrap and settings.database_url
    database_url = settings.database_url
    async with KafkaPublisher(settings) as publisher:
        index = 0
        while True:
            sources, titles = plan.round(index)
            await record_titles(database_url, titles)
            total = sum(len(s.messages) for s in sources)
            console.print(f"round {index + 1}: replaying {len(sources)} stream(s), {total:,} messages, at "
                          f"{plan.speed:g}x: {', '.join(titles)}")
            summary = await replay(publisher, sources, speed=plan.speed,
                                   dead_letters=plan.dead_letters if index == 0 else ())
            console.print(f"round {index + 1} done: {summary.sent:,} messages in {summary.wall_seconds:.0f} s")
            index += 1
            if not plan.loop:
                console.print("replay finished; the dashboard stays up until Ctrl-C")
                await asyncio.Event().wait()


async def run_until_stopped(settings: Settings, plan: ReplayPlan, worker: subprocess.Popen[bytes]) -> str:
    """Replay until SIGINT/SIGTERM (or the worker dies); returns why it stopped."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reason = {"why": "stopped"}
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def watch_worker() -> None:
        while worker.poll() is None:
            await asyncio.sleep(1.0)
        reason["why"] = f"the worker exited with code {worker.returncode}"
        stop.set()

    tasks = [asyncio.create_task(replay_rounds(settings, plan)),
             asyncio.create_task(watch_worker())]
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    for task in (*tasks, stopper):
        task.cancel()
    results = await asyncio.gather(*tasks, stopper, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)]
    if errors:
        raise errors[0]
    return reason["why"]


# ---------------------------------------------------------------- the command

def run_demo(settings: Settings, plan: ReplayPlan) -> str:
    from infra.services import running_services
    from infra.workers import stop_workers
    from training.demo_model import ensure_demo_model

    with running_services(settings) as endpoints:
        resolved = endpoints.settings
        assert resolved.kafka_bootstrap and resolved.database_url
        asyncio.run(_migrate(resolved.database_url))
        model = ensure_demo_model(settings)
        port = choose_port(settings)
        host = settings.web_host if settings.web_host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        base_url = f"http://{host}:{port}"
        log_path = settings.state_dir / "logs" / "demo-worker.log"
        console.print(f"starting the worker (log: {log_path}) ...")
        worker = start_worker(resolved.model_copy(update={"web_port": port}), log_path)
        try:
            wait_until_serving(worker, base_url, log_path)
            print_welcome(settings, f"{base_url}/dashboard/", log_path, model.version)
            print(f"dashboard: {base_url}/dashboard/", flush=True)  # one plain line for scripts
            why = asyncio.run(run_until_stopped(resolved, plan, worker))
            signal.signal(signal.SIGTERM, _interrupt)  # the event loop reset it on close
        finally:
            console.print("stopping the worker ...")
            stop_workers([worker])
        console.print(f"stopping the services this demo started ({', '.join(endpoints.started) or 'none'}) ...")
    return why


def demo_command(
    ctx: typer.Context,
    file: Annotated[Path | None, typer.Option("--file", exists=True, dir_okay=False,
                                              help="replay this chat file (e.g. chat-downloader JSON) "
                                                   "instead of simulated streams")] = None,
    streams: Annotated[int, typer.Option(min=1, max=20, help="simulated streams replayed at once")] = 3,
    speed: Annotated[float, typer.Option(min=0.1, max=10_000, help="replay speed (20 = 20x faster than live)")] = 20.0,
    seed: Annotated[int, typer.Option(help="simulator seed of the first round")] = 0,
    loop: Annotated[bool | None, typer.Option("--loop/--no-loop",
                                              help="keep replaying (default: yes for simulated streams, "
                                                   "no for --file)")] = None,
    minutes: Annotated[float, typer.Option(min=1, max=600, help="length of each simulated stream")] = 60.0,
    viewers: Annotated[int, typer.Option(min=10, max=20_000, help="viewers per simulated stream")] = 300,
) -> None:
    """The whole pipeline on this machine: embedded Kafka + PostgreSQL, a model, the worker, the
    dashboard, and streams replayed at --speed. Prints the dashboard URL; Ctrl-C stops everything."""
    from dashboard import check_bind
    from infra.cli import settings_from

    settings = settings_from(ctx)
    check_bind(settings)  # before anything starts
    plan = ReplayPlan(speed=speed, loop=loop if loop is not None else file is None, n_streams=streams,
                      seed=seed, viewers=viewers, minutes=minutes)
    if file is not None:
        plan.file_sources, plan.dead_letters = read_file(file)
        console.print(f"{file}: {len(plan.file_sources)} stream(s), "
                      f"{sum(len(s.messages) for s in plan.file_sources):,} messages, "
                      f"{len(plan.dead_letters)} rejected record(s) (they go to dead-letters)")
    previous = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops the demo like Ctrl-C
    try:
        why = run_demo(settings, plan)
    except KeyboardInterrupt:
        why = "interrupted"
    finally:
        signal.signal(signal.SIGTERM, previous)
    console.print(f"demo stopped ({why}); nothing left running")
    if why.startswith("the worker exited"):
        raise typer.Exit(1)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt

