"""`donorcast fit`: the training recipe (training/configs/donor-default.toml) with flags on top -> main()."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from training.sources import load_streams
from training.train_classifier import ENCODER_TIERS, main


def fit_command(
    ctx: typer.Context,
    data: Annotated[list[Path] | None, typer.Argument(metavar="FILES", help=(
        "chat files (any supported format); default: the recipe's simulated streams with --simulate, "
        "else PostgreSQL"))] = None,
    recipe: Annotated[Path | None, typer.Option(help="training recipe TOML (default: training/configs/donor-default.toml)")]
    = None,
    label: Annotated[str | None, typer.Option(metavar="paid|member|conversion", help="what to predict")] = None,
    simulate: Annotated[int | None, typer.Option(help="train on N simulated streams of the recipe's preset")] = None,
    preset: Annotated[str | None, typer.Option(help="simulator preset for --simulate (default: the recipe's)")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    tracks: Annotated[str | None, typer.Option(metavar="chat,history", help="comma list of tracks")] = None,
    deploy_track: Annotated[str | None, typer.Option(metavar="TRACK", help="the track --promote makes live")] = None,
    promote: Annotated[bool, typer.Option("--promote/--no-promote", help="promote the deploy track's version")] = False,
    n_snapshots: Annotated[int | None, typer.Option(help="snapshot times per stream")] = None,
    max_messages: Annotated[int | None, typer.Option(help="newest messages per sequence")] = None,
    max_viewers_per_stream: Annotated[int | None, typer.Option(help="subsample viewers (speed)")] = None,
    max_epochs: Annotated[int | None, typer.Option()] = None,
    lexical_buckets: Annotated[int | None, typer.Option(help="hashed word/trigram table rows the model learns (0 = off)")] = None,
    encoder: Annotated[Path | None, typer.Option(help="HF checkpoint dir (default: settings.base_model or packaged MiniLM)")] = None,
    device: Annotated[str | None, typer.Option(metavar="cpu|cuda|auto", help="classifier training device")] = None,
    encoder_tier: Annotated[str | None, typer.Option(metavar="bert|static", help=(
        "message encoder: bert (int8 ONNX, the default) or static (a model2vec table distilled from it, "
        "~20x+ faster)"))] = None,
    report_dir: Annotated[Path | None, typer.Option(help="where to write the test report")] = None,
) -> None:
    """Train the donor classifier (chat-only and with-history tracks) beside its baselines; register it.
    With no flags it follows training/configs/donor-default.toml; each flag overrides the recipe."""
    from rich.console import Console
    from rich.table import Table

    from infra.cli import settings_from
    from infra.errors import InputError
    from training.recipe import load_recipe, with_overrides

    settings = settings_from(ctx)
    if encoder_tier not in (None, *ENCODER_TIERS):
        raise InputError(f"--encoder-tier must be one of {', '.join(ENCODER_TIERS)} (got {encoder_tier!r})")
    try:
        plan = load_recipe(recipe)
        config = with_overrides(
            plan.fit, label=label, n_snapshots=n_snapshots, max_messages=max_messages,
            max_viewers_per_stream=max_viewers_per_stream, seed=seed, max_epochs=max_epochs,
            lexical_buckets=lexical_buckets, device=device, deploy_track=deploy_track,
            runtime_encoder=ENCODER_TIERS[encoder_tier] if encoder_tier else None,
            tracks=tuple(t.strip() for t in tracks.split(",") if t.strip()) if tracks else None,
        )
    except (ValueError, OSError) as error:
        raise InputError(f"training recipe: {error}") from None
    config = replace(config, promote=promote, threads=settings.worker_threads,
                     encoder_dir=encoder or settings.base_model, report_dir=report_dir,
                     note=f"recipe {plan.path.name}")
    streams = load_streams(settings, files=data or [], simulate=simulate or 0,
                           seed=plan.simulate_seed if seed is None else seed + 7, preset=preset or plan.preset)
    results = main(config, streams=streams, settings=settings)
    table = Table("track", "version", "val PR-AUC", "test PR-AUC", "test ROC-AUC", "threshold")
    for track, result in results.tracks.items():
        m = result.test_metrics
        table.add_row(track, result.version.version, f"{result.val_pr_auc:.3f}", f"{m.get('pr_auc', float('nan')):.3f}",
                      f"{m.get('roc_auc', float('nan')):.3f}", f"{result.threshold:.3f}")
    console = Console()
    console.print(table)
    if results.report:
        console.print(f"report: {results.report}")
    if results.promoted:
        console.print(f"promoted {results.promoted}")
