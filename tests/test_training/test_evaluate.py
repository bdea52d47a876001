"""Evaluation metrics by hand, the written report, and `evaluate` through the ONNX scorer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.test_training.test_fit_support import fitted, shared_cache, synthetic_streams
from training.evaluate import (
    EvalSamples,
    ModelScores,
    Section,
    best_f1_threshold,
    compute_metrics,
    evaluate_version,
    lead_times,
    precision_at_k,
    write_report,
)


def _samples(**columns) -> EvalSamples:
    n = len(columns["label"])
    defaults = dict(stream=np.array(["s"] * n, dtype=object), snapshot=np.zeros(n), event=np.full(n, np.nan),
                    weight=np.ones(n), new_viewer=np.zeros(n, dtype=bool),
                    viewer=np.array([f"v{i}" for i in range(n)], dtype=object))
    defaults.update(columns)
    defaults["label"] = np.asarray(defaults["label"])
    return EvalSamples(**defaults)


def test_precision_at_k_uses_the_latest_score_per_viewer_and_stream() -> None:
    # stream a at t=10: v1 (pos, .9), v2 (neg, .8); at t=20 v2 rescored .1, v3 (neg, .5) arrives.
    samples = _samples(
        stream=np.array(["a", "a", "a", "a", "b"], dtype=object),
        viewer=np.array(["v1", "v2", "v2", "v3", "w1"], dtype=object),
        snapshot=np.array([10.0, 10.0, 20.0, 20.0, 5.0]),
        label=[1, 0, 0, 0, 0],
    )
    scores = np.array([0.9, 0.8, 0.1, 0.5, 0.7])
    # a@10: top1 = v1 (1); a@20: top1 = v1 (1) -> 1.0; b: 0.0; mean over streams 0.5
    assert precision_at_k(samples, scores, 1) == pytest.approx(0.5)
    # a@10 top2 = {v1, v2} -> .5; a@20 top2 = {v1, v3} -> .5; b -> 0 -> mean .25
    assert precision_at_k(samples, scores, 2) == pytest.approx(0.25)


def test_lead_time_counts_from_first_entry_in_the_top_k() -> None:
    samples = _samples(
        stream=np.array(["a"] * 4, dtype=object), viewer=np.array(["d", "x", "d", "x"], dtype=object),
        snapshot=np.array([100.0, 100.0, 400.0, 400.0]), event=np.array([1000.0, np.nan, 1000.0, np.nan]),
        label=[1, 0, 1, 0],
    )
    # top-1 at t=100 is x, at t=400 it is d -> lead = 1000 - 400
    leads = lead_times(samples, np.array([0.2, 0.6, 0.9, 0.5]), k=1)
    assert leads == {("a", "d"): 600.0}
    metrics = compute_metrics(samples, np.array([0.2, 0.6, 0.9, 0.5]), 0.5, label="paid")
    assert metrics["median_lead_minutes"] == pytest.approx(15.0)  # top 10 holds both from t=100
    assert metrics["donors_in_top10_before_paying"] == 1.0


def test_metrics_and_threshold() -> None:
    samples = _samples(label=[0, 0, 1, 1, 0, 1], weight=np.array([1, 1, 1, 1, 2, 1.0]))
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    metrics = compute_metrics(samples, scores, 0.3, label="member")
    assert metrics["recall"] == 1.0 and metrics["precision"] == pytest.approx(3 / 4)
    assert 0.0 < metrics["brier"] < 0.25
    assert metrics["roc_auc"] == pytest.approx(11 / 12)  # weighted pairs: only (0.35, 0.4) is misordered
    assert best_f1_threshold(samples.label, scores) == pytest.approx(0.35)


def test_report_has_metrics_plots_and_markdown(tmp_path) -> None:
    rng = np.random.default_rng(0)
    n = 200
    samples = _samples(label=(rng.random(n) < 0.2).astype(int), snapshot=rng.uniform(0, 100, n),
                       event=np.where(rng.random(n) < 0.2, 150.0, np.nan),
                       stream=np.array([f"s{i % 3}" for i in range(n)], dtype=object))
    good = np.clip(samples.label * 0.5 + rng.random(n) * 0.5, 0, 1)
    section = Section("all", samples, [ModelScores("model", good, 0.5), ModelScores("noise", rng.random(n), 0.5)],
                      plot_key="x")
    report = write_report(tmp_path, "Test report", [section], label="paid")
    text = report.read_text()
    assert "| model |" in text and "| noise |" in text and "![pr_curve_x](pr_curve_x.png)" in text
    for png in ("pr_curve_x.png", "reliability_x.png", "lead_time_x.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["all"]["model"]["pr_auc"] > metrics["all"]["noise"]["pr_auc"]


def test_evaluate_version_scores_through_onnx_beside_baselines(tmp_path) -> None:
    settings, results, streams = fitted()
    version = results.tracks["chat"].version
    report = evaluate_version(settings, version, streams, out_dir=tmp_path / "eval", cache_dir=shared_cache())
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    models = metrics["all test viewers"]
    name = f"transformer ({version.version})"
    assert {name, "activity", "tfidf", "mean_embedding"} <= set(models)
    # Same model, same test samples as in the fit's own report (PyTorch there, ONNX here).
    fit_metrics = results.metrics["chat only · all test viewers"]["transformer"]
    assert models[name]["pr_auc"] == pytest.approx(fit_metrics["pr_auc"], abs=0.03)
    assert (tmp_path / "eval" / "pr_curve_chat.png").is_file() and "## all test viewers" in report.read_text()


def test_evaluate_refuses_a_dataset_with_another_label(tmp_path) -> None:
    from infra.errors import InputError
    from training.build_dataset import DatasetConfig, build_dataset
    from training.evaluate import version_features

    _, results, _ = fitted()
    dataset = build_dataset(synthetic_streams(3, seed=5), DatasetConfig(label="member", held_out="none"))
    with pytest.raises(InputError, match="predicts 'paid'"):
        version_features(results.tracks["chat"].version, dataset, dataset.samples[:3], shared_cache())


def test_evaluate_command_on_chat_files(tmp_path) -> None:
    from typer.testing import CliRunner

    from infra.cli import build_app
    from producers.simulator import simulate, write_chat_downloader_json

    settings, results, _ = fitted()
    version = results.tracks["history"].version
    files = [write_chat_downloader_json(s, tmp_path / f"{s.stream_id}.json")
             for s in simulate(5, 31, viewers=60, minutes=60, donor_share=0.15)]
    out = tmp_path / "report"
    result = CliRunner().invoke(build_app(), ["--state-dir", str(settings.state_dir), "evaluate", *map(str, files),
                                              "--model", version.version, "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())["all test viewers"]
    assert f"transformer+history ({version.version})" in metrics and "history_rule" in metrics
    assert (out / "report.md").read_text().startswith(f"# Evaluation of {version.version}")
