"""`donorcast retrain`: the scheduled champion/challenger job.

1. Rebuild the dataset from the streams now in PostgreSQL (chronological split: the newest streams
   are the held-out test).
2. Fit a candidate (same track as the promoted champion; `deploy_track` when there is none).
3. Score candidate and champion on the same newest held-out streams through `DonorScorer` (the
   ONNX path the live agents run), with each model's own validation-chosen threshold.
4. Promote the candidate only if its test PR-AUC beats the champion's by more than
   `min_improvement`; record the decision and both metric sets in the candidate's manifest, in
   `retrain_decision.json`, and in PostgreSQL (`model_versions`).

If the champion was trained on streams that are now in the test split, that is recorded; it can
only favour the champion, so a promotion is never the result of it.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from training.build_dataset import DatasetConfig, StreamData
from training.train_classifier import FitConfig

if TYPE_CHECKING:
    from infra.settings import Settings

DECISION_FILE = "retrain_decision.json"


@dataclass
class RetrainDecision:
    candidate: str
    champion: str | None
    promoted: bool
    reason: str
    metric: str
    candidate_metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    test_streams: list[str]
    champion_saw_test_streams: list[str]
    decided_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(candidate: dict[str, float], champion: dict[str, float] | None, *, metric: str,
           min_improvement: float) -> tuple[bool, str]:
    """Promote only a strictly better candidate (by more than min_improvement)."""
    new = candidate.get(metric, float("nan"))
    if new != new:  # nan: no positives in the test split, nothing to compare
        return False, f"candidate {metric} is undefined on the test split"
    if champion is None:
        return True, "no promoted model yet"
    old = champion.get(metric, float("nan"))
    if old != old:
        return True, f"champion {metric} is undefined on the test split"
    if new > old + min_improvement:
        return True, f"candidate {metric} {new:.4f} > champion {old:.4f} + {min_improvement}"
    return False, f"candidate {metric} {new:.4f} is not above champion {old:.4f} + {min_improvement}"


def retrain(
    settings: Settings, config: FitConfig, *, streams: list[StreamData] | None = None, min_improvement: float = 0.0,
    metric: str = "pr_auc", record_in_database: bool = True,
) -> RetrainDecision:
    from models.registry import ModelRegistry
    from training.build_dataset import build_dataset
    from training.evaluate import EvalSamples, compute_metrics, score_version
    from training.sources import load_streams
    from training.train_classifier import main, update_manifest

    registry = ModelRegistry(settings.registry_dir)
    champion = registry.promoted()
    track = champion.manifest.get("track", config.deploy_track) if champion else config.deploy_track
    if streams is None:
        streams = load_streams(settings)
    dataset = build_dataset(streams, config.dataset)
    test = [dataset.samples[i] for i in dataset.indices("test")]
    if not test:
        from infra.errors import InputError

        raise InputError("retrain needs a test split: too few streams in PostgreSQL")
    results = main(replace(config, tracks=(track,), deploy_track=track, promote=False), dataset=dataset,
                   settings=settings)
    candidate = results.tracks[track].version

    cache_dir = config.cache_dir or settings.state_dir / "cache"
    samples = EvalSamples.from_dataset(dataset, test)
    label = config.dataset.label
    candidate_metrics = compute_metrics(samples, score_version(candidate, dataset, test, cache_dir),
                                        float(candidate.manifest["threshold"]), label=label)
    champion_metrics, saw = None, []
    if champion is not None and champion.manifest.get("label") == label:
        champion_metrics = compute_metrics(samples, score_version(champion, dataset, test, cache_dir),
                                           float(champion.manifest.get("threshold", 0.5)), label=label)
        seen = set(champion.manifest.get("streams", {}).get("train", [])) | set(
            champion.manifest.get("streams", {}).get("val", []))
        saw = sorted(seen & {s.stream_id for s in dataset.streams if s.split == "test"})
    if champion is not None and champion_metrics is None:
        promote, reason = False, (f"champion {champion.version} predicts {champion.manifest.get('label')!r}, not "
                                  f"{label!r}; promote by hand with `donorcast models promote`")
    else:
        promote, reason = decide(candidate_metrics, champion_metrics, metric=metric, min_improvement=min_improvement)
    decision = RetrainDecision(
        candidate=candidate.version, champion=champion.version if champion else None, promoted=promote,
        reason=reason, metric=metric, candidate_metrics=candidate_metrics, champion_metrics=champion_metrics,
        test_streams=[s.stream_id for s in dataset.streams if s.split == "test"], champion_saw_test_streams=saw,
        decided_at=datetime.now(UTC).isoformat(),
    )
    (candidate.path / DECISION_FILE).write_text(json.dumps(decision.to_dict(), indent=2, default=float))
    update_manifest(candidate, {"retrain": decision.to_dict()})
    if promote:
        registry.promote(candidate.version)
    if record_in_database:
        _record(settings, decision, candidate.path)
    return decision


def _record(settings: Settings, decision: RetrainDecision, path: Path) -> None:
    from infra.postgres import create_pool
    from infra.repository import record_model_version
    from infra.services import running_services

    with running_services(settings, kafka=False) as endpoints:
        async def _write() -> None:
            pool = await create_pool(endpoints.database_url)  # type: ignore[arg-type]
            try:
                await record_model_version(
                    pool, decision.candidate, str(path),
                    {"candidate": decision.candidate_metrics, "champion": decision.champion_metrics,
                     "champion_version": decision.champion, "metric": decision.metric},
                    note=("promoted: " if decision.promoted else "refused: ") + decision.reason,
                    promoted=decision.promoted,
                )
            finally:
                await pool.close()

        asyncio.run(_write())


def retrain_command(
    ctx: typer.Context,
    label: Annotated[str, typer.Option(help="paid | member | conversion")] = "paid",
    min_improvement: Annotated[float, typer.Option(help="PR-AUC margin the candidate must beat the champion by")] = 0.0,
    max_epochs: Annotated[int, typer.Option()] = 20,
    n_snapshots: Annotated[int, typer.Option()] = 8,
    max_viewers_per_stream: Annotated[int | None, typer.Option()] = None,
    deploy_track: Annotated[str, typer.Option(help="track to train when no model is promoted yet")] = "history",
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Retrain on the streams in PostgreSQL; promote the candidate only if it beats the promoted model."""
    from rich.console import Console
    from rich.table import Table

    from infra.cli import settings_from

    settings = settings_from(ctx)
    config = FitConfig(
        dataset=DatasetConfig(label=label, n_snapshots=n_snapshots, max_viewers_per_stream=max_viewers_per_stream,  # type: ignore[arg-type]
                              seed=seed),
        deploy_track=deploy_track, max_epochs=max_epochs, seed=seed, threads=settings.worker_threads,
        encoder_dir=settings.base_model,
    )
    decision = retrain(settings, config, min_improvement=min_improvement)
    table = Table("model", "version", "PR-AUC", "ROC-AUC", "p@10", "Brier")
    rows = [("candidate", decision.candidate, decision.candidate_metrics)]
    if decision.champion_metrics is not None:
        rows.append(("champion", decision.champion or "", decision.champion_metrics))
    for name, version, m in rows:
        table.add_row(name, version, *(f"{m.get(k, float('nan')):.3f}" for k in ("pr_auc", "roc_auc", "p_at_10", "brier")))
    console = Console()
    console.print(table)
    verdict = "[green]promoted[/green]" if decision.promoted else "[yellow]not promoted[/yellow]"
    console.print(f"{verdict} {decision.candidate}: {decision.reason}")
