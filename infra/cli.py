"""`donorcast` command line: the composition root.

Service commands (up, down, status, db migrate) live here. Every other command lives beside the
code it runs and is listed in COMMANDS below, so this table is the map of the whole CLI. Those
modules are imported in `build_app()`, never when `infra` is imported, and they import their heavy
dependencies (torch, faust, selenium) inside the command bodies so `donorcast --help` stays fast.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from infra.errors import DonorcastError
from infra.settings import Settings, load_settings

console = Console(stderr=True)

# name -> "module:attribute"; a function becomes a command, a typer.Typer a command group.
COMMANDS: dict[str, str] = {
    # producers: sources -> PostgreSQL / Kafka
    "ingest": "producers.ingest:ingest_command",
    "simulate": "producers.simulator:simulate_command",
    "collect": "producers.archive.collect:collect_command",
    "update": "producers.archive.collect:update_command",
    "live": "producers.live:live_command",
    "replay": "producers.replay:replay_command",
    # training: offline jobs
    "pretrain": "training.pretrain_mlm:pretrain_command",
    "analyze": "training.coherence:analyze_app",
    "fit": "training.fit_command:fit_command",
    "evaluate": "training.evaluate:evaluate_command",
    "score": "training.batch_score:score_command",
    "export": "training.export_onnx:export_command",
    "retrain": "training.retrain:retrain_command",
    "models": "training.model_commands:models_app",
    # stream agents: Kafka -> scores -> dashboard
    "worker": "stream_agents.worker:worker_command",
    "demo": "stream_agents.demo:demo_command",
    "watch": "stream_agents.watch:watch_command",
    "bench": "bench.cli:bench_app",
}


def settings_from(ctx: typer.Context) -> Settings:
    """The Settings object built once in the root callback (commands never read env vars themselves)."""
    settings = ctx.find_root().obj
    assert isinstance(settings, Settings)
    return settings


def _root(
    ctx: typer.Context,
    state_dir: Annotated[str | None, typer.Option(help="state directory (DONORCAST_STATE_DIR)")] = None,
) -> None:
    overrides = {"state_dir": state_dir} if state_dir else {}
    try:
        ctx.obj = load_settings(**overrides)
    except ValueError as error:  # pydantic's ValidationError is a ValueError
        console.print(f"[red]invalid settings:[/red] {error}")
        raise typer.Exit(2) from None


def up(ctx: typer.Context) -> None:
    """Start the embedded Kafka and PostgreSQL (if not configured externally) and leave them running."""
    from infra.kafka import ensure_topics_sync
    from infra.postgres import create_pool, describe_url
    from infra.repository import migrate
    from infra.services import start_kafka, start_postgres

    settings = settings_from(ctx)
    bootstrap, _ = start_kafka(settings, detach=True)
    ensure_topics_sync(bootstrap, settings)
    database_url, _ = start_postgres(settings, detach=True)

    async def _migrate() -> list[str]:
        pool = await create_pool(database_url)
        try:
            return await migrate(pool)
        finally:
            await pool.close()

    applied = asyncio.run(_migrate())
    print(f"kafka      {bootstrap}")
    print(f"postgres   {describe_url(database_url)}")
    if applied:
        console.print(f"applied migrations: {', '.join(applied)}")
    console.print("stop them with: donorcast down")


def down(ctx: typer.Context) -> None:
    """Stop the embedded services started by `up` (or left by a crashed run)."""
    from infra.kafka import EmbeddedKafka
    from infra.postgres import EmbeddedPostgres

    settings = settings_from(ctx)
    for name, service in (("kafka", EmbeddedKafka(settings)), ("postgres", EmbeddedPostgres(settings))):
        stopped = service.stop()
        console.print(f"{name}: {'stopped' if stopped else 'was not running'}")


def status(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Health of Kafka, PostgreSQL and (when running) the worker's metrics."""
    from infra.health import collect_status

    report = collect_status(settings_from(ctx))
    if as_json:
        print(json.dumps(report, indent=2, default=str))
        return
    table = Table("component", "state", "where", "detail")
    for name, item in report.items():
        colour = "green" if item["state"] == "healthy" else "yellow" if item["state"] == "stopped" else "red"
        table.add_row(name, f"[{colour}]{item['state']}[/{colour}]", item.get("where", ""), item.get("detail", ""))
    Console().print(table)
    if any(item["state"] == "unhealthy" for item in report.values()):
        raise typer.Exit(1)


db_app = typer.Typer(help="Database schema.", no_args_is_help=True)


@db_app.command("migrate")
def db_migrate(ctx: typer.Context) -> None:
    """Apply pending SQL migrations (safe to run any number of times)."""
    from infra.postgres import create_pool
    from infra.repository import migrate
    from infra.services import running_services

    settings = settings_from(ctx)
    with running_services(settings, kafka=False) as endpoints:
        assert endpoints.database_url is not None

        async def _run() -> list[str]:
            pool = await create_pool(endpoints.database_url)  # type: ignore[arg-type]
            try:
                return await migrate(pool)
            finally:
                await pool.close()

        applied = asyncio.run(_run())
    console.print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="donorcast",
        help="Live donor-likelihood scoring of livestream chat.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )
    app.callback()(_root)
    app.command()(up)
    app.command()(down)
    app.command()(status)
    app.add_typer(db_app, name="db")
    for name, target in COMMANDS.items():
        attribute = _load(target)
        if attribute is None:
            continue
        if isinstance(attribute, typer.Typer):
            app.add_typer(attribute, name=name)
        else:
            app.command(name)(attribute)
    return app


def _load(target: str) -> object | None:
    """Import "module:attribute"; None only when that module itself does not exist (yet)."""
    module_name, attribute = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            return None
        raise
    return getattr(module, attribute)


def main() -> None:
    app = build_app()
    try:
        app()
    except DonorcastError as error:
        console.print(f"[red]error:[/red] {error}")
        sys.exit(1)


if __name__ == "__main__":
    main()
