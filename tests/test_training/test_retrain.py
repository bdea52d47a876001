"""`retrain` against a real PostgreSQL: one run promotes (no champion yet), one refuses (worse candidate)."""

from __future__ import annotations

import asyncio
import json

import asyncpg

from infra.postgres import create_pool
from infra.repository import save_messages
from infra.settings import load_settings
from models.registry import ModelRegistry
from tests.test_training.test_fit_support import small_fit_config, synthetic_streams
from training.retrain import DECISION_FILE, decide, retrain


def _load_streams_into(database_url: str, n: int) -> None:
    async def run() -> None:
        pool = await create_pool(database_url)
        try:
            for stream in synthetic_streams(n, seed=3, n_viewers=50):
                await save_messages(pool, stream.messages, source="test")
        finally:
            await pool.close()

    asyncio.run(run())


def _model_rows(database_url: str) -> dict[str, asyncpg.Record]:
    async def run() -> dict[str, asyncpg.Record]:
        conn = await asyncpg.connect(database_url)
        try:
            return {r["version"]: r for r in await conn.fetch("SELECT * FROM model_versions")}
        finally:
            await conn.close()

    return asyncio.run(run())


def test_retrain_promotes_then_refuses_a_worse_candidate(tmp_path, database_url: str) -> None:
    _load_streams_into(database_url, 10)
    settings = load_settings(state_dir=tmp_path / "state", database_url=database_url)
    registry = ModelRegistry(settings.registry_dir)
    config = small_fit_config(deploy_track="chat", baselines=False)

    first = retrain(settings, config)  # streams come from PostgreSQL
    assert first.promoted and first.champion is None and first.reason == "no promoted model yet"
    assert registry.promoted().version == first.candidate
    assert first.test_streams and first.candidate_metrics["pr_auc"] > 0.4

    worse = small_fit_config(deploy_track="chat", baselines=False, max_epochs=1, lr=1e-6, seed=1)
    second = retrain(settings, worse)
    assert second.champion == first.candidate and not second.promoted
    assert second.test_streams == first.test_streams  # both judged on the same newest streams
    assert second.candidate_metrics["pr_auc"] < second.champion_metrics["pr_auc"]
    assert registry.promoted().version == first.candidate
    # the decision, with both metric sets, is in the registry ...
    candidate = registry.get(second.candidate)
    recorded = json.loads((candidate.path / DECISION_FILE).read_text())
    assert recorded["promoted"] is False and recorded["champion_metrics"]["pr_auc"] == second.champion_metrics["pr_auc"]
    assert candidate.manifest["retrain"]["reason"] == second.reason
    # ... and in PostgreSQL
    rows = _model_rows(database_url)
    assert rows[first.candidate]["promoted_at"] is not None and rows[first.candidate]["note"].startswith("promoted")
    assert rows[second.candidate]["promoted_at"] is None and rows[second.candidate]["note"].startswith("refused")
    assert json.loads(rows[second.candidate]["metrics"])["champion_version"] == first.candidate


def test_decide_needs_a_strictly_better_candidate() -> None:
    assert decide({"pr_auc": 0.5}, None, metric="pr_auc", min_improvement=0.0)[0]
    assert not decide({"pr_auc": 0.5}, {"pr_auc": 0.5}, metric="pr_auc", min_improvement=0.0)[0]
    assert not decide({"pr_auc": 0.52}, {"pr_auc": 0.5}, metric="pr_auc", min_improvement=0.05)[0]
    assert decide({"pr_auc": 0.56}, {"pr_auc": 0.5}, metric="pr_auc", min_improvement=0.05)[0]
    assert not decide({"pr_auc": float("nan")}, None, metric="pr_auc", min_improvement=0.0)[0]
