"""Markdown from the result files: bench/results/README.md, and the marked section of any README.

Every figure in the tables is read from bench/results/*.json at the time of writing; nothing is
typed by hand. `write_results_readme()` writes the full page; `rewrite_readme_section(path)`
replaces whatever lies between `<!-- bench:start -->` and `<!-- bench:end -->` in another file
(the top-level README) with the same tables, one heading level deeper.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.machine import RESULTS_DIR

START_MARKER = "<!-- bench:start -->"
END_MARKER = "<!-- bench:end -->"
NAMES = ("encoder", "pipeline", "training")


def load_results(results_dir: Path = RESULTS_DIR) -> dict[str, dict[str, Any]]:
    """{name: result} for encoder/pipeline/training and any pipeline-<experiment>.json files."""
    out = {}
    for name in NAMES:
        path = results_dir / f"{name}.json"
        if path.is_file():
            out[name] = json.loads(path.read_text(encoding="utf-8"))
    for path in sorted(results_dir.glob("pipeline-*.json")):
        out[path.stem] = json.loads(path.read_text(encoding="utf-8"))
    return out


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float | int):
        return f"{value:,.{digits}f}"
    return str(value)


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _machine_line(result: dict[str, Any]) -> str:
    m = result["machine"]
    return (f"_{result['started_at'][:16].replace('T', ' ')} UTC, {m['cpu_model']}, {m['usable_cores']} cores, "
            f"{m['ram_gib']} GiB; torch {m['torch']}, onnxruntime {m['onnxruntime']}, python {m['python']}; "
            f"load average {m['load_average_start'][0]} at start, {m.get('load_average_end', ['?'])[0]} at end; "
            f"commit {m.get('git_commit') or '?'}; {result.get('duration_s', '?')} s._")


def _notes(result: dict[str, Any]) -> list[str]:
    lines = [f"- note: {n}" for n in result.get("notes", [])]
    lines += [f"- {a}" for a in result.get("analysis", [])]
    return lines


def encoder_section(result: dict[str, Any], h: str) -> list[str]:
    data, model = result["data"], result["model"]
    lines = [f"{h} Encoder", "", _machine_line(result), "",
             f"{data['messages']} messages of {data['source']}; mean {data['tokens_mean']} tokens "
             f"(p99 {data['tokens_p99']:.0f}, max_length {data['max_length']}); model {model['layers']} layers x "
             f"{model['hidden']} hidden, {model['gflop_per_message_at_mean_tokens']} GFLOP/message at the mean "
             f"length, {model['gflop_per_message_padded']} padded. Speed-up is against (a) in the same run.", ""]
    rows = []
    for run in result["runs"]:
        for v in run["variants"]:
            rows.append([v["name"], run["threads"], _fmt(v["msgs_per_s"]), _fmt(v["msgs_per_cpu_s"]),
                         _fmt(v["latency_ms"]["p50"], 1), _fmt(v["latency_ms"]["p99"], 1), v["call_size"],
                         f"{v['speedup_vs_baseline']:.1f}x", f"{v['speedup_vs_baseline_cpu']:.1f}x",
                         f"{v['roofline_pct_wall']:.0f}%", _fmt(v["cosine_vs_torch_fp32"].get("mean"), 4)])
    lines += _table(["variant", "threads", "msgs/s", "msgs/CPU-s", "p50 ms/call", "p99 ms/call", "msgs/call",
                     "vs (a)", "vs (a) CPU", "% fp32 roofline", "cosine vs fp32"], rows)
    gemm = ", ".join(f"{r['threads']} thread(s) {r['gemm']['gflops_wall']} GFLOP/s "
                     f"({r['gemm']['gflops_per_cpu_s']} per CPU-s)" for r in result["runs"])
    lines += ["", f"Measured fp32 GEMM ({'x'.join(map(str, result['runs'][0]['gemm']['shape_mkn']))}): {gemm}.", ""]
    return lines + _notes(result) + [""]


def _worker_kind(result: dict[str, Any]) -> str:
    config = result["config"]
    parts = [f"worker variant `{config['worker_variant']}` (bench.worker_variants)" if config.get("worker_variant")
             else "stock worker"]
    if config.get("worker_env"):
        parts.append("env " + ", ".join(f"`{k}={v}`" for k, v in config["worker_env"].items()))
    if config.get("embed_batch_size"):
        parts.append(f"embed_batch_size {config['embed_batch_size']}")
    return "; ".join(parts)


def _latency_text(latency: dict[str, Any] | None) -> str:
    if not latency:
        return "–"
    p = latency["latency_ms"]
    text = " / ".join(_fmt(p[k], 0) for k in ("p50", "p95", "p99")) + f" @ {latency['offered_rate']:g}/s"
    return text + (" (overloaded)" if latency.get("overloaded") else "")


def pipeline_section(result: dict[str, Any], h: str, title: str = "Pipeline") -> list[str]:
    lines = [f"{h} {title} (embedded Tansu + stream workers, scoring and persistence on)", "", _machine_line(result), "",
             f"Workers: {_worker_kind(result)}.", "",
             f"Throughput phase: {result['data']['throughput_phase']}. Latency phase: offered at "
             f"{result['config']['rate']:g} msgs/s for {result['config']['rate_seconds']:g} s. Model "
             f"{result['model']['version']} ({result['model'].get('runtime_encoder')}).", ""]
    rows = []
    for run in result["runs"]:
        t, lat = run["throughput"], run["latency"]
        cpu = t["cpu_ms_per_message"]
        cpu_text = ", ".join(f"{k.replace(' (bench process)', '')} {v:.2f}" for k, v in cpu.items() if v is not None)
        rows.append([run["workers"], t["messages"], _fmt(t["sustained_msgs_per_s"]), _fmt(t["end_to_end_msgs_per_s"]),
                     _fmt(t["publish_msgs_per_s"]), _fmt(t["cores_busy"], 2),
                     f"{t['postgres_rows'].get('chat_messages', '–')}" if t["postgres_rows"] else "–",
                     _latency_text(lat), _latency_text(run.get("latency_half_capacity")), cpu_text])
    lines += _table(["workers", "messages", "sustained msgs/s", "end-to-end msgs/s", "publish msgs/s", "cores busy",
                     "rows persisted", "p50 / p95 / p99 ms @ offered", "same at half capacity", "CPU ms per message"], rows)
    return lines + [""] + _notes(result) + [""]


def training_section(result: dict[str, Any], h: str) -> list[str]:
    lines = [f"{h} Training", "", _machine_line(result), ""]
    mlm = result.get("mlm")
    if mlm:
        lines += [f"MLM pretraining, batch {mlm['batch_size']} x <= {mlm['chunk_size']} tokens, "
                  f"{mlm['threads']} thread(s), same chunks and model:", ""]
        rows = [[r["name"], r["steps"], _fmt(r["tokens"]), _fmt(r["step_seconds"], 1), _fmt(r["tokens_per_s"])]
                for r in (mlm["ours"], mlm["hf_trainer_default"])]
        lines += _table(["loop", "steps", "tokens", "step seconds", "tokens/s"], rows)
        lines += ["", f"Ours vs Trainer: **{mlm['ours_vs_trainer_tokens_per_s']}x** tokens/s.", ""]
    clf = result.get("classifier")
    if clf:
        lines += [f"Donor classifier ({clf['streams']} simulated streams, {clf['train_samples']} training samples): "
                  f"median **{clf['epoch_seconds_median']} s per epoch** ({_fmt(clf['train_samples_per_s'])} samples/s) "
                  f"over {clf['epochs']} epochs; embedding {clf['distinct_texts_embedded']} distinct texts took "
                  f"{clf['embed_seconds']} s ({_fmt(clf['embed_texts_per_s'])} texts/s, int8 ONNX).", ""]
    return lines + _notes(result) + [""]


def targets_section(results: dict[str, dict[str, Any]], h: str) -> list[str]:
    rows = []
    for name in NAMES:  # experiments are not the figures the targets are judged on
        for t in results.get(name, {}).get("targets", []):
            rows.append([t["name"], t["target"], _fmt(t["value"], 1 if isinstance(t["value"], float) else 0),
                         _fmt(t["met"])])
    if not rows:
        return []
    return [f"{h} Targets", "", *_table(["target", "goal", "measured", "met"], rows), "", *ceiling_lines(results), ""]


def ceiling_lines(results: dict[str, dict[str, Any]]) -> list[str]:
    """What the compute limit allows the pipeline, from the encoder and pipeline result files."""
    encoder, pipeline = results.get("encoder"), results.get("pipeline")
    if not encoder:
        return []
    one = next((r for r in encoder["runs"] if r["threads"] == 1), None)
    if one is None:
        return []
    best = next(v for v in one["variants"] if v["name"] == "d_onnx_int8_bucketed")
    cores = encoder["machine"].get("usable_cores") or 1
    lines = [f"- Compute ceiling on this machine: the int8 encoder alone, in its best batching (d, 1 thread), embeds "
             f"{best['msgs_per_cpu_s']:,.0f} messages per CPU-second, so {cores} fully used cores cap any pipeline "
             f"built on it at about {best['msgs_per_cpu_s'] * cores:,.0f} msgs/s before Kafka, faust, scoring and "
             f"persistence take their share. 1,000 msgs/s on {cores} cores needs at most "
             f"{1000 * cores / 1000:.1f} CPU-ms per message in total."]
    if pipeline:
        first = pipeline["runs"][0]["throughput"]
        worker_ms = sum(v for k, v in first["cpu_ms_per_message"].items() if k.startswith("worker") and v)
        total_ms = sum(v for v in first["cpu_ms_per_message"].values() if v)
        lines.append(f"- The stock pipeline spends {total_ms:.1f} CPU-ms per message ({worker_ms:.1f} in the worker), "
                     f"i.e. about {1000 * cores / max(total_ms, 1e-9):,.0f} msgs/s if all {cores} cores worked for it alone.")
    return lines


def render(results: dict[str, dict[str, Any]], level: int = 2) -> str:
    h = "#" * level
    lines = ["<!-- generated by `donorcast bench readme` from bench/results/*.json; do not edit by hand -->", ""]
    if not results:
        return "\n".join(lines + ["No benchmark results yet: run `donorcast bench all`.", ""])
    lines += targets_section(results, h)
    sections = {"encoder": encoder_section, "pipeline": pipeline_section, "training": training_section}
    for name in NAMES:
        if name in results:
            lines += sections[name](results[name], h)
    for name in sorted(k for k in results if k.startswith("pipeline-")):
        lines += pipeline_section(results[name], h, title=f"Pipeline experiment `{name.removeprefix('pipeline-')}`")
    return "\n".join(lines).rstrip() + "\n"


def render_summary(results: dict[str, dict[str, Any]], level: int = 3) -> str:
    """The top-level README's short form: targets, one line per encoder variant and pipeline run,
    the training ratio; the full tables stay in bench/results/README.md."""
    h = "#" * level
    lines = ["<!-- generated by `donorcast bench readme --readme README.md` from bench/results/*.json; "
             "do not edit by hand -->", ""]
    if not results:
        return "\n".join(lines + ["No benchmark results yet: run `donorcast bench all`.", ""])
    lines += targets_section(results, h)
    encoder = results.get("encoder")
    if encoder:
        one = next((r for r in encoder["runs"] if r["threads"] == 1), encoder["runs"][0])
        rows = [[v["name"], _fmt(v["msgs_per_s"]), _fmt(v["msgs_per_cpu_s"]), f"{v['speedup_vs_baseline']:.1f}x"]
                for v in one["variants"]]
        lines += [f"Encoder, {one['threads']} thread, {encoder['data']['messages']} messages of "
                  f"{encoder['data']['source'].split(' (')[0]}:", "",
                  *_table(["variant", "msgs/s", "msgs/CPU-s", "vs (a)"], rows), ""]
    pipeline = results.get("pipeline")
    if pipeline:
        rows = [[run["workers"], _fmt(run["throughput"]["sustained_msgs_per_s"]), _fmt(run["throughput"]["cores_busy"], 2),
                 _latency_text(run["latency"]), _latency_text(run.get("latency_half_capacity"))]
                for run in pipeline["runs"]]
        lines += [f"Pipeline ({_worker_kind(pipeline)}, {pipeline['runs'][0]['throughput']['messages']:,} messages "
                  f"at max speed, then a fixed offered rate):", "",
                  *_table(["workers", "sustained msgs/s", "cores busy", "p50 / p95 / p99 ms @ offered",
                           "same at half capacity"], rows), ""]
    training = results.get("training", {}).get("mlm")
    if training:
        lines += [f"MLM pretraining: our loop {_fmt(training['ours']['tokens_per_s'])} tokens/s vs the Hugging Face "
                  f"Trainer default {_fmt(training['hf_trainer_default']['tokens_per_s'])} "
                  f"(**{training['ours_vs_trainer_tokens_per_s']}x**).", ""]
    machine = next(iter(results.values()))["machine"]
    lines += [f"Machine: {machine['cpu_model']}, {machine['usable_cores']} cores ({', '.join(machine['cpu_flags'])}), "
              f"shared and noisy: same-run ratios are the robust figures. Full tables, load averages and profiles: "
              f"`bench/results/README.md`.", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_results_readme(results_dir: Path = RESULTS_DIR) -> Path:
    results = load_results(results_dir)
    body = ["# Benchmarks", "",
            "Regenerate everything with `donorcast bench all` (or one part: `donorcast bench encoder|pipeline|training`, "
            "then `donorcast bench readme`). Each JSON file holds the machine, its load, the configuration, the "
            "baseline measured in the same run, and the raw figures. Ratios within a run are the robust numbers: "
            "the machine is shared and wall-clock rates move with other jobs' load.", "", render(results, level=2)]
    path = results_dir / "README.md"
    path.write_text("\n".join(body), encoding="utf-8")
    return path


def rewrite_readme_section(readme: Path, results_dir: Path = RESULTS_DIR, level: int = 4) -> bool:
    """Replace the text between the bench markers of `readme` with tables from the JSON files.
    Returns True if the file changed; raises InputError when the markers are missing."""
    from infra.errors import InputError

    text = readme.read_text(encoding="utf-8")
    start, end = text.find(START_MARKER), text.find(END_MARKER)
    if start < 0 or end < start:
        raise InputError(f"{readme} has no '{START_MARKER}' ... '{END_MARKER}' section to fill")
    new = text[: start + len(START_MARKER)] + "\n" + render_summary(load_results(results_dir), level=level) + text[end:]
    if new == text:
        return False
    readme.write_text(new, encoding="utf-8")
    return True
