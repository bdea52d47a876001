"""The training benchmark end to end at a tiny size: our MLM loop and the Trainer on the same data,
and the classifier's per-epoch clock."""

from __future__ import annotations

from pathlib import Path

from tests.test_bench.conftest import MACHINE_KEYS, strict_json


def test_training_bench_runs_both_loops_and_the_classifier(tiny_model: Path, tmp_path: Path) -> None:
    from bench.training import TrainingBenchConfig, run
    from infra.settings import load_settings

    out = tmp_path / "training.json"
    config = TrainingBenchConfig(mlm_steps=3, batch_size=4, chunk_size=32, mlm_messages=600, classifier_streams=3,
                                 classifier_epochs=2, model_dir=tiny_model, source="simulator")
    run(config, load_settings(state_dir=tmp_path / "state"), out)
    result = strict_json(out)
    assert MACHINE_KEYS <= set(result["machine"]) and result["baseline"] == "hf_trainer_default"
    ours, trainer = result["mlm"]["ours"], result["mlm"]["hf_trainer_default"]
    assert ours["steps"] == trainer["steps"] == 3
    # Same chunks (full 32-token chunks but for stream tails), same batch size: about the same tokens.
    assert 3 * 4 * 8 <= ours["tokens"] <= 3 * 4 * 32 and 3 * 4 * 8 <= trainer["tokens"] <= 3 * 4 * 32
    assert ours["train_chunks"] == trainer["train_chunks"]
    assert ours["tokens_per_s"] > 0 and trainer["tokens_per_s"] > 0
    assert result["mlm"]["ours_vs_trainer_tokens_per_s"] == round(ours["tokens_per_s"] / trainer["tokens_per_s"], 2)
    clf = result["classifier"]
    assert clf["epochs"] == 2 and len(clf["epoch_seconds"]) == 2 and all(s > 0 for s in clf["epoch_seconds"])
    assert clf["train_samples"] > 0 and clf["distinct_texts_embedded"] > 0
    assert result["targets"][0]["met"] == (result["mlm"]["ours_vs_trainer_tokens_per_s"] >= 1.0)
