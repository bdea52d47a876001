"""`donorcast models list|promote`: look at the registry and choose what the live agents load."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

models_app = typer.Typer(help="Model registry: list versions, promote one.", no_args_is_help=True)

# Shown in `list` when a version's metrics carry them (top level or under a "test"/"validation" key).
KEY_METRICS = ("pr_auc", "roc_auc", "perplexity")


def _key_metrics(metrics: dict[str, Any]) -> str:
    shown = []
    for scope in (metrics, metrics.get("test", {}), metrics.get("validation", {})):
        if not isinstance(scope, dict):
            continue
        for name in KEY_METRICS:
            value = scope.get(name)
            if isinstance(value, int | float) and not any(item.startswith(name + "=") for item in shown):
                shown.append(f"{name}={value:.3f}")
    return " ".join(shown)


@models_app.command("list")
def list_command(ctx: typer.Context) -> None:
    """Committed model versions, oldest first; * marks the promoted one."""
    from infra.cli import settings_from
    from models.registry import ModelRegistry

    registry = ModelRegistry(settings_from(ctx).registry_dir)
    versions = registry.list_versions()
    if not versions:
        Console(stderr=True).print(f"no model versions in {registry.root}")
        return
    table = Table("", "version", "created", "label", "encoder", "metrics", "files")
    for version in versions:
        manifest = version.manifest
        table.add_row(
            "[green]*[/green]" if version.promoted else "",
            version.version,
            version.created_at.strftime("%Y-%m-%d %H:%M"),
            str(manifest.get("label", "")),
            version.encoder_tier if manifest.get("classifier_config") else "",
            _key_metrics(manifest.get("metrics", {})),
            ", ".join(sorted(manifest.get("files", {}))),
        )
    Console(width=200).print(table)


@models_app.command("promote")
def promote_command(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="a version shown by `donorcast models list`")],
) -> None:
    """Make VERSION the model the live agents load (they pick it up without a restart)."""
    from infra.cli import settings_from
    from models.registry import ModelRegistry

    registry = ModelRegistry(settings_from(ctx).registry_dir)
    before = registry.promoted()
    registry.promote(version)
    Console(stderr=True).print(
        f"promoted {version}" + (f" (was {before.version})" if before and before.version != version else "")
    )
