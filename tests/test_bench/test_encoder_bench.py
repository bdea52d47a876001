"""The encoder benchmark end to end at a tiny size: every variant runs, the JSON is complete and valid,
and the README tables are generated from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_bench.conftest import MACHINE_KEYS, strict_json

VARIANTS = ["a_naive_torch_padded", "a0_torch_per_message", "b_torch_batched", "c_onnx_fp32",
            "d0_onnx_int8_arrival", "d_onnx_int8_bucketed", "e8_onnx_int8_micro_sorted", "e1_onnx_int8_micro_unpadded",
            "s_static_model2vec"]


@pytest.fixture(scope="module")
def encoder_result(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from bench.encoder import EncoderBenchConfig, run
    from infra.settings import load_settings

    folder = tmp_path_factory.mktemp("bench-encoder")
    out = folder / "results" / "encoder.json"
    config = EncoderBenchConfig(messages=40, threads=(1,), batch_size=8, model_dir=tiny_model, source="simulator",
                                warmup_calls=1, gemm_repeats=2)
    run(config, load_settings(state_dir=folder / "state"), out)
    return out, strict_json(out)


def test_every_variant_is_measured_on_the_same_messages(encoder_result: tuple[Path, dict]) -> None:
    _, result = encoder_result
    assert MACHINE_KEYS <= set(result["machine"])
    assert result["baseline"] == "a_naive_torch_padded"
    (run,) = result["runs"]
    assert run["threads"] == 1 and run["gemm"]["gflops_wall"] > 0
    assert [v["name"] for v in run["variants"]] == VARIANTS
    for v in run["variants"]:
        assert v["messages"] == 40 and v["msgs_per_s"] > 0 and v["msgs_per_cpu_s"] > 0
        assert v["latency_ms"]["p50"] > 0 and v["latency_ms"]["p99"] >= v["latency_ms"]["p50"]
    by_name = {v["name"]: v for v in run["variants"]}
    for v in run["variants"][:-1]:
        assert v["executed_gflop"] >= v["useful_gflop"] > 0
    # The static table runs no transformer: no FLOPs, and vectors in its own space (no cosine to fp32).
    static = by_name["s_static_model2vec"]
    assert static["executed_gflop"] == static["useful_gflop"] == 0 and static["cosine_vs_torch_fp32"] == {}
    assert result["model"]["static_dim"] > 0
    assert by_name["a_naive_torch_padded"]["speedup_vs_baseline"] == 1.0
    # Per-message calls, and batches of 8: 40 and 5 calls; padding to max_length computes 64 tokens each.
    assert by_name["a_naive_torch_padded"]["calls"] == 40 and by_name["b_torch_batched"]["calls"] == 5
    assert by_name["a_naive_torch_padded"]["padded_tokens"] == 40 * 64
    # Length buckets pad less than arrival-order batches of the same size.
    assert by_name["d_onnx_int8_bucketed"]["padded_tokens"] <= by_name["d0_onnx_int8_arrival"]["padded_tokens"]
    # Sorted pieces of a micro-batch pad less than the whole micro-batch; one row per run pads nothing.
    assert by_name["e8_onnx_int8_micro_sorted"]["padded_tokens"] <= by_name["d0_onnx_int8_arrival"]["padded_tokens"]
    assert by_name["e1_onnx_int8_micro_unpadded"]["padded_tokens"] == by_name["e1_onnx_int8_micro_unpadded"]["real_tokens"]
    # The same vectors, whichever way they were computed (masked mean pooling ignores padding).
    assert by_name["a_naive_torch_padded"]["cosine_vs_torch_fp32"]["min"] > 0.999
    assert by_name["c_onnx_fp32"]["cosine_vs_torch_fp32"]["min"] > 0.999
    assert by_name["d_onnx_int8_bucketed"]["cosine_vs_torch_fp32"]["mean"] > 0.9
    assert result["targets"][0]["value"] == by_name["d_onnx_int8_bucketed"]["speedup_vs_baseline"]
    fast = result["targets"][1]
    assert fast["name"].startswith("fast tier") and fast["met"] == (fast["value"] >= 20)
    assert fast["value"] == round(static["msgs_per_cpu_s"] / by_name["d_onnx_int8_bucketed"]["msgs_per_cpu_s"], 1)
    assert result["analysis"]


def test_readme_section_is_filled_from_the_json_files(encoder_result: tuple[Path, dict], tmp_path: Path) -> None:
    from bench.report import END_MARKER, START_MARKER, rewrite_readme_section, write_results_readme
    from infra.errors import InputError

    out, result = encoder_result
    readme = tmp_path / "README.md"
    readme.write_text(f"# Project\n\nintro\n\n{START_MARKER}\nold figures\n{END_MARKER}\n\nafter\n", encoding="utf-8")
    assert rewrite_readme_section(readme, out.parent) is True
    text = readme.read_text(encoding="utf-8")
    assert "old figures" not in text and text.startswith("# Project\n") and text.endswith(f"{END_MARKER}\n\nafter\n")
    baseline = result["runs"][0]["variants"][0]
    assert f"| a_naive_torch_padded | {baseline['msgs_per_s']:,.0f} | {baseline['msgs_per_cpu_s']:,.0f} | 1.0x |" in text
    assert rewrite_readme_section(readme, out.parent) is False  # idempotent
    page = write_results_readme(out.parent)
    assert "d_onnx_int8_bucketed" in page.read_text(encoding="utf-8")

    bare = tmp_path / "no-markers.md"
    bare.write_text("# nothing to fill\n", encoding="utf-8")
    with pytest.raises(InputError, match="bench:start"):
        rewrite_readme_section(bare, out.parent)
