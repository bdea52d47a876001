"""`donorcast` command line: the composition root.

Service commands (up, down, status, db migrate) live here. Every other command lives beside the
code it runs and is listed in COMMANDS below, so this table is the map of the whole CLI. Those
modules are imported only when their command runs (`infra.cli_group.LazyGroup`: `donorcast --help`
reads their docstrings from source), and they import their heavy dependencies (torch, faust,
selenium) inside the command bodies.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from infra.cli_group import LazyGroup
from infra.errors import DonorcastError

if TYPE_CHECKING:  # pydantic-settings costs a third of a second: not for `--help`
    from pydantic import ValidationError

    from infra.settings import Settings

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
    "worker": "cli.worker:worker_command",
    "demo": "cli.demo:demo_command",
    "watch": "dashboard.watch:watch_command",
    "bench": "bench.cli:bench_app",
}


def settings_from(ctx: typer.Context) -> Settings:
    """The Settings object built once in the root callback (commands never read env vars themselves)."""
    from infra.settings import Settings

    settings = ctx.find_root().obj
    assert isinstance(settings, Settings)
    return settings


# settings given as options of the root command: their errors name the option, not the variable
ROOT_OPTIONS = {"state_dir": "--state-dir"}


def _root(
    ctx: typer.Context,
    state_dir: Annotated[str | None, typer.Option(help="state directory (DONORCAST_STATE_DIR)")] = None,
) -> None:
    import tomllib

    from pydantic import ValidationError

    from infra.settings import load_settings

    overrides = {"state_dir": state_dir} if state_dir else {}
    try:
        ctx.obj = load_settings(**overrides)
    except ValidationError as error:
        console.print(describe_settings(error, given=set(overrides)), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except tomllib.TOMLDecodeError as error:  # the config file is no TOML at all
        console.print(f"invalid settings: {config_file()} is not valid TOML: {error}", markup=False, highlight=False,
                      soft_wrap=True)
        raise typer.Exit(2) from None


def config_file() -> str:
    import os

    from infra.settings import CONFIG_FILE_ENV, DEFAULT_CONFIG_FILE

    return os.environ.get(CONFIG_FILE_ENV, DEFAULT_CONFIG_FILE)


def describe_settings(error: ValidationError, given: set[str]) -> str:
    """A settings ValidationError as one line naming each variable and what it may be."""
    from infra.errors import describe_settings_error
    from infra.settings import Settings

    return describe_settings_error(
        error, Settings, env_prefix=str(Settings.model_config.get("env_prefix", "")), config_file=config_file(),
        options={field: option for field, option in ROOT_OPTIONS.items() if field in given})


def up(ctx: typer.Context) -> None:
    """Start the embedded Kafka and PostgreSQL (if not configured externally) and leave them running."""
    import asyncio

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


def status(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="the full report as JSON")] = False
           ) -> None:
    """Health of Kafka, PostgreSQL and the workers of this state dir."""
    from rich.table import Table

    from infra.health import collect_status

    settings = settings_from(ctx)
    report = collect_status(settings)
    if as_json:
        import json

        print(json.dumps(report, indent=2, default=str))
        return
    table = Table("component", "state", "where", "detail", title=f"donorcast status of {settings.state_dir.resolve()}",
                  title_justify="left")
    colours = {"healthy": "green", "starting": "yellow", "stopped": "yellow"}
    for name, item in report.items():
        colour = colours.get(item["state"], "red")
        table.add_row(name, f"[{colour}]{item['state']}[/{colour}]", escape(item.get("where", "")),
                      escape(item.get("detail", "")))
    for column in table.columns:  # wrap long URLs and details inside their cell, never cut them off
        column.overflow = "fold"
    Console().print(table)
    if any(item["state"] == "unhealthy" for item in report.values()):
        raise typer.Exit(1)


db_app = typer.Typer(help="Database schema.", no_args_is_help=True)


@db_app.command("migrate")
def db_migrate(ctx: typer.Context) -> None:
    """Apply pending SQL migrations (safe to run any number of times)."""
    import asyncio

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


class _Commands(LazyGroup):
    lazy = COMMANDS


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="donorcast",
        help="Live donor-likelihood scoring of livestream chat.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        cls=_Commands,
    )
    app.callback()(_root)
    app.command()(up)
    app.command()(down)
    app.command()(status)
    app.add_typer(db_app, name="db")
    return app


def main() -> None:
    app = build_app()
    try:
        app()
    except DonorcastError as error:
        console.print(f"[red]error:[/red] {error}")
        sys.exit(1)


if __name__ == "__main__":
    main()
