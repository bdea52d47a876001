"""`donorcast bench ...`: run the benchmarks, write bench/results/*.json and the README tables.

    donorcast bench all                  # encoder, pipeline, training, then the README tables
    donorcast bench encoder|pipeline|training [options]
    donorcast bench readme [--readme README.md]

The same commands run as `python -m bench.encoder` (etc.). Results go to bench/results/ unless
--out says otherwise; `readme` regenerates bench/results/README.md from the JSON files, and with
--readme also the marked section of another file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from infra.settings import Settings

console = Console(stderr=True)
bench_app = typer.Typer(help="Benchmarks (results in bench/results/, tables in its README).", no_args_is_help=True)

ThreadsOption = Annotated[list[int] | None, typer.Option("--threads", "-t", min=1, help="thread counts (repeatable; default 1 and 2)")]
SourceOption = Annotated[str, typer.Option(help="chat: auto (real when ../shared/data/raw exists), real or simulator")]
OutOption = Annotated[Path | None, typer.Option(help="result JSON (default bench/results/<name>.json)")]
ModelOption = Annotated[Path | None, typer.Option(help="HF encoder checkpoint dir (default: settings.base_model or MiniLM)")]


def _settings(ctx: typer.Context) -> Settings:
    """Settings from the `donorcast` root callback, or from the environment under `python -m bench.x`."""
    from infra.settings import load_settings

    root = ctx.find_root().obj
    return root if isinstance(root, Settings) else load_settings()


def _out(name: str, out: Path | None) -> Path:
    from bench.machine import default_output

    return out or default_output(name)


def _refresh_readme(out: Path) -> None:
    from bench.machine import RESULTS_DIR
    from bench.report import write_results_readme

    if out.parent.resolve() == RESULTS_DIR.resolve():
        write_results_readme()


def _summarise_targets(result: dict) -> None:
    for target in result.get("targets", []):
        colour = "green" if target["met"] else "red"
        console.print(f"[{colour}]{'met' if target['met'] else 'MISSED'}[/{colour}] {target['name']}: "
                      f"{target['value']} (goal {target['target']})")


@bench_app.command("encoder")
def encoder_command(
    ctx: typer.Context,
    messages: Annotated[int, typer.Option(min=8, help="messages embedded by every variant")] = 2000,
    threads: ThreadsOption = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    max_length: Annotated[int, typer.Option(min=8, max=512)] = 64,
    model_dir: ModelOption = None,
    source: SourceOption = "auto",
    out: OutOption = None,
) -> None:
    """Encoder msgs/s and batch latency: naive HF per message vs batched torch vs ONNX fp32 vs ONNX int8."""
    from bench.encoder import EncoderBenchConfig, run

    config = EncoderBenchConfig(messages=messages, threads=tuple(threads or (1, 2)), batch_size=batch_size,
                                max_length=max_length, model_dir=model_dir, source=source)
    path = _out("encoder", out)
    result = run(config, _settings(ctx), path)
    console.print(f"wrote {path}")
    _summarise_targets(result)
    _refresh_readme(path)


@bench_app.command("pipeline")
def pipeline_command(
    ctx: typer.Context,
    messages: Annotated[int, typer.Option(min=10, help="messages replayed at max speed")] = 200_000,
    workers: Annotated[list[int] | None, typer.Option("--workers", "-w", min=1, help="worker counts (repeatable; default 1 and 2)")] = None,
    rate: Annotated[float, typer.Option(min=1, help="offered msgs/s in the latency phase")] = 200.0,
    rate_seconds: Annotated[float, typer.Option(min=1, help="length of the latency phase")] = 60.0,
    partitions: Annotated[int, typer.Option(min=1, max=64)] = 4,
    embed_batch_size: Annotated[int | None, typer.Option(min=1, help="override the workers' micro-batch size")] = None,
    worker_env: Annotated[list[str] | None, typer.Option(help="KEY=VALUE for the workers' environment (repeatable), "
                                                          "e.g. PRODUCER_LINGER=0.005 (faust)")] = None,
    worker_variant: Annotated[str | None, typer.Option(help="run a candidate fix from bench.worker_variants "
                                                       "(write it to --out bench/results/pipeline-<name>.json)")] = None,
    profile: Annotated[bool, typer.Option(help="py-spy the workers during the throughput phase")] = False,
    source: SourceOption = "auto",
    out: OutOption = None,
) -> None:
    """Replay through embedded Tansu and 1 vs 2 workers: sustained msgs/s and produce->score latency."""
    from bench.pipeline import PipelineBenchConfig, run

    pairs = [item.partition("=") for item in worker_env or ()]
    if any(not key or not sep for key, sep, _ in pairs):
        raise typer.BadParameter("use KEY=VALUE", param_hint="--worker-env")
    config = PipelineBenchConfig(messages=messages, workers=tuple(workers or (1, 2)), rate=rate, rate_seconds=rate_seconds,
                                 partitions=partitions, embed_batch_size=embed_batch_size, profile=profile, source=source,
                                 worker_env={key: value for key, _, value in pairs}, worker_variant=worker_variant)
    if worker_variant is not None:
        from bench.worker_variants import VARIANTS

        if worker_variant not in VARIANTS:
            raise typer.BadParameter(f"one of {', '.join(VARIANTS)}", param_hint="--worker-variant")
    path = _out("pipeline", out)
    result = run(config, _settings(ctx), path)
    console.print(f"wrote {path}")
    _summarise_targets(result)
    _refresh_readme(path)


@bench_app.command("training")
def training_command(
    ctx: typer.Context,
    mlm_steps: Annotated[int, typer.Option(min=1, help="optimizer steps for each MLM loop")] = 30,
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    chunk_size: Annotated[int, typer.Option(min=16, max=512)] = 128,
    threads: Annotated[int, typer.Option(min=1)] = 1,
    mlm_messages: Annotated[int, typer.Option(min=100, help="chat messages read for the MLM corpus")] = 20_000,
    classifier_streams: Annotated[int, typer.Option(min=3)] = 8,
    classifier_epochs: Annotated[int, typer.Option(min=1)] = 4,
    model_dir: ModelOption = None,
    source: SourceOption = "auto",
    out: OutOption = None,
) -> None:
    """MLM tokens/s of our loop vs the HF Trainer default; classifier fit seconds per epoch."""
    from bench.training import TrainingBenchConfig, run

    config = TrainingBenchConfig(mlm_steps=mlm_steps, batch_size=batch_size, chunk_size=chunk_size, threads=threads,
                                 mlm_messages=mlm_messages, classifier_streams=classifier_streams,
                                 classifier_epochs=classifier_epochs, model_dir=model_dir, source=source)
    path = _out("training", out)
    result = run(config, _settings(ctx), path)
    console.print(f"wrote {path}")
    _summarise_targets(result)
    _refresh_readme(path)


@bench_app.command("readme")
def readme_command(
    readme: Annotated[Path | None, typer.Option(help="also rewrite this file's <!-- bench:start/end --> section")] = None,
) -> None:
    """Regenerate bench/results/README.md (and optionally a README section) from the JSON files."""
    from bench.report import rewrite_readme_section, write_results_readme

    console.print(f"wrote {write_results_readme()}")
    if readme is not None:
        changed = rewrite_readme_section(readme)
        console.print(f"{readme}: {'updated' if changed else 'already up to date'}")


@bench_app.command("all")
def all_command(
    ctx: typer.Context,
    messages: Annotated[int, typer.Option(min=10, help="pipeline messages at max speed")] = 200_000,
    encoder_messages: Annotated[int, typer.Option(min=8)] = 2000,
    mlm_steps: Annotated[int, typer.Option(min=1)] = 30,
    rate_seconds: Annotated[float, typer.Option(min=1)] = 60.0,
    profile: Annotated[bool, typer.Option(help="py-spy the workers during the pipeline's throughput phase")] = True,
    readme: Annotated[Path | None, typer.Option(help="also rewrite this file's <!-- bench:start/end --> section")] = None,
) -> None:
    """Every benchmark at its full size, then the README tables."""
    from bench.encoder import EncoderBenchConfig
    from bench.encoder import run as run_encoder
    from bench.machine import default_output
    from bench.pipeline import PipelineBenchConfig
    from bench.pipeline import run as run_pipeline
    from bench.report import rewrite_readme_section, write_results_readme
    from bench.training import TrainingBenchConfig
    from bench.training import run as run_training

    settings = _settings(ctx)
    for name, job in (
        ("encoder", lambda: run_encoder(EncoderBenchConfig(messages=encoder_messages), settings, default_output("encoder"))),
        ("training", lambda: run_training(TrainingBenchConfig(mlm_steps=mlm_steps), settings, default_output("training"))),
        ("pipeline", lambda: run_pipeline(PipelineBenchConfig(messages=messages, rate_seconds=rate_seconds, profile=profile),
                                          settings, default_output("pipeline"))),
    ):
        console.rule(f"bench {name}")
        _summarise_targets(job())
        write_results_readme()
    console.print(f"wrote {write_results_readme()}")
    if readme is not None:
        rewrite_readme_section(readme)
        console.print(f"updated {readme}")


def run_module(command: str, argv: list[str]) -> None:
    """`python -m bench.<command> [options]`: the command outside `donorcast`, with its error handling."""
    import sys

    from infra.errors import DonorcastError

    try:
        bench_app([command, *argv])
    except DonorcastError as error:
        console.print(f"[red]error:[/red] {error}")
        sys.exit(1)
