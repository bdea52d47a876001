"""Encoder benchmark: how fast chat messages become vectors, four ways, on the same messages.

    python -m bench.encoder [--messages 2000] [--threads 1 --threads 2]

Variants (each at every thread count, in one run, on the same texts in the same order):

- a  naive: Hugging Face PyTorch fp32, one message per forward pass, padded to max_length (the
     seed's way; the baseline every speed-up is quoted against);
- a0 per message without padding (the seed's embedding notebook did not pad): diagnostic;
- b  PyTorch fp32 batched with dynamic padding (`models.encoder.MessageEncoder`), arrival order;
- c  ONNX Runtime fp32 (`models.onnx_encoder.OnnxEncoder`), same batches as b;
- d0 ONNX Runtime int8, same batches as b: diagnostic, isolates quantisation from bucketing;
- d  ONNX Runtime int8 with dynamic padding and length bucketing: batches of similar length
     (`models.encoder.length_sorted_batches`), what the offline jobs do with a backlog;
- e8 / e1 ONNX Runtime int8 on the stream worker's arrival-order micro-batches, each sorted by
     length and run in pieces of 8 rows / one row at a time: diagnostics for the live embed step;
- s  the fast tier: a model2vec static table distilled from the same checkpoint
     (`models.static_encoder.StaticEncoder`, `fit --encoder-tier static`), arrival-order batches.
     It runs no matmul, so its FLOP and roofline figures are 0, and its vectors live in another
     (PCA) space, so it has no cosine to PyTorch fp32. Target: >= 20x int8 (d) per CPU-second.

A "call" is one encoder invocation: one message for a/a0, one batch for the others; latency
percentiles are per call. Throughput is given per wall second and per CPU second.

Compute limit: FLOPs per message follow from the model's shape (matmuls only; a multiply-add is
2 FLOPs): per layer and token 8h^2 (Q, K, V, output projections) + 4hi (feed-forward), plus 4Th
for attention scores and their weighted sum over T tokens. "Executed" FLOPs count the padded
length each call really computed, "useful" FLOPs only the real tokens. Their rate is compared
with the fp32 GEMM rate measured in the same run (`bench.machine.gemm_gflops`): % of roofline.
int8 variants are reported as fp32-equivalent FLOPs, so they can exceed 100 %.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.machine import Recorder, gemm_gflops, percentiles_ms, timed

if TYPE_CHECKING:
    from infra.settings import Settings

BASELINE = "a_naive_torch_padded"
TARGET_SPEEDUP = 5.0
STATIC = "s_static_model2vec"
TARGET_STATIC_VS_INT8 = 20.0  # msgs per CPU-second, against the fastest int8 variant (d)
INNER = 8  # piece size of the micro-batch diagnostics (e8)


@dataclass
class EncoderBenchConfig:
    messages: int = 2000
    threads: tuple[int, ...] = (1, 2)
    batch_size: int = 32  # the worker's embed_batch_size
    max_length: int = 64  # the encoder's max_length everywhere in the project
    model_dir: Path | None = None  # None = packaged all-MiniLM-L6-v2
    cache_dir: Path | None = None  # ONNX exports (shared with training); default STATE_DIR/cache
    source: str = "auto"  # auto | real | simulator
    seed: int = 0
    warmup_calls: int = 3
    gemm_repeats: int = 12


@dataclass(frozen=True)
class ModelShape:
    layers: int
    hidden: int
    intermediate: int

    def flops(self, tokens: int) -> float:
        """Matmul FLOPs of one sequence of `tokens` tokens through the encoder."""
        per_layer = tokens * (8 * self.hidden**2 + 4 * self.hidden * self.intermediate) + 4 * tokens**2 * self.hidden
        return float(self.layers * per_layer)


@dataclass
class Call:
    index: np.ndarray  # rows of the input texts in this call
    pieces: list[tuple[int, int]]  # (rows, padded length) of each forward pass the call makes

    @property
    def padded_tokens(self) -> int:
        return sum(rows * length for rows, length in self.pieces)

    def flops(self, shape: ModelShape) -> float:
        return sum(rows * shape.flops(length) for rows, length in self.pieces)


@dataclass
class VariantResult:
    name: str
    description: str
    threads: int
    calls: int
    call_size: int
    messages: int
    wall_s: float
    cpu_s: float
    msgs_per_s: float
    msgs_per_cpu_s: float
    latency_ms: dict[str, float | None]
    padded_tokens: int
    real_tokens: int
    executed_gflop: float
    useful_gflop: float
    gflops_executed_wall: float
    gflops_executed_per_cpu_s: float
    roofline_pct_wall: float
    roofline_pct_cpu: float
    useful_roofline_pct_wall: float
    speedup_vs_baseline: float | None = None
    speedup_vs_baseline_cpu: float | None = None
    cosine_vs_torch_fp32: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------- how calls are cut


def arrival_calls(lengths: Sequence[int], size: int) -> list[np.ndarray]:
    return [np.arange(start, min(start + size, len(lengths))) for start in range(0, len(lengths), size)]


def bucketed_calls(lengths: Sequence[int], size: int) -> list[np.ndarray]:
    from models.encoder import length_sorted_batches

    return list(length_sorted_batches(lengths, size))


def plan(lengths: Sequence[int], indices: list[np.ndarray], pad_to: int | None) -> list[Call]:
    lengths_array = np.asarray(lengths)
    return [Call(index, [(len(index), pad_to or int(lengths_array[index].max()))]) for index in indices]


def plan_inner(lengths: Sequence[int], indices: list[np.ndarray], inner: int) -> list[Call]:
    """Calls of `indices`, each run as length-sorted pieces of `inner` rows (as OnnxEncoder.embed
    does with batch_size=inner), each piece padded to its own longest row."""
    from models.encoder import length_sorted_batches

    lengths_array = np.asarray(lengths)
    calls = []
    for index in indices:
        call_lengths = lengths_array[index]
        pieces = [(len(piece), int(call_lengths[piece].max())) for piece in length_sorted_batches(call_lengths, inner)]
        calls.append(Call(index, pieces))
    return calls


# ---------------------------------------------------------------- the encoders under test


def naive_embedder(model: Any, tokenizer: Any, max_length: int, *, pad: bool) -> Callable[[list[str]], np.ndarray]:
    """One message per forward pass, as the seed did (optionally padded to max_length)."""
    import torch

    from models.encoder import mean_pool

    def embed(texts: list[str]) -> np.ndarray:
        rows = []
        for text in texts:
            encoded = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt",
                                padding="max_length" if pad else False)
            with torch.inference_mode():
                hidden = model(**encoded).last_hidden_state
                rows.append(mean_pool(hidden, encoded["attention_mask"]).numpy()[0])
        return np.stack(rows)

    return embed


def run_variant(name: str, description: str, embed: Callable[[list[str]], np.ndarray], texts: Sequence[str],
                calls: list[Call], lengths: Sequence[int], shape: ModelShape, gemm: dict[str, float],
                threads: int, warmup: int) -> tuple[VariantResult, np.ndarray]:
    """Time every call (wall and CPU); returns the figures and the vectors in input order."""
    for call in calls[:warmup]:
        embed([texts[i] for i in call.index])
    outputs: np.ndarray | None = None
    walls, cpus = [], []
    for call in calls:
        batch = [texts[i] for i in call.index]
        with timed() as span:
            vectors = embed(batch)
        walls.append(span.wall)
        cpus.append(span.cpu)
        if outputs is None:
            outputs = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
        outputs[call.index] = vectors
    assert outputs is not None
    n = len(texts)
    wall, cpu = float(sum(walls)), float(sum(cpus))
    padded = sum(c.padded_tokens for c in calls)
    real = int(sum(lengths))
    executed = sum(c.flops(shape) for c in calls) / 1e9
    useful = sum(shape.flops(int(t)) for t in lengths) / 1e9 if padded else 0.0  # 0: no transformer ran
    result = VariantResult(
        name=name, description=description, threads=threads, calls=len(calls),
        call_size=max(len(c.index) for c in calls), messages=n, wall_s=round(wall, 3), cpu_s=round(cpu, 3),
        msgs_per_s=round(n / wall, 1), msgs_per_cpu_s=round(n / max(cpu, 1e-9), 1),
        latency_ms=percentiles_ms(walls, (50, 99)), padded_tokens=int(padded), real_tokens=real,
        executed_gflop=round(executed, 2), useful_gflop=round(useful, 2),
        gflops_executed_wall=round(executed / wall, 1), gflops_executed_per_cpu_s=round(executed / max(cpu, 1e-9), 1),
        roofline_pct_wall=round(100 * executed / wall / gemm["wall"], 1),
        roofline_pct_cpu=round(100 * executed / max(cpu, 1e-9) / gemm["per_cpu_s"], 1),
        useful_roofline_pct_wall=round(100 * useful / wall / gemm["wall"], 1),
    )
    return result, outputs


def cosine_stats(vectors: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    a = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    b = reference / np.maximum(np.linalg.norm(reference, axis=1, keepdims=True), 1e-12)
    cos = (a * b).sum(axis=1)
    return {"mean": round(float(cos.mean()), 5), "min": round(float(cos.min()), 5)}


def variants_under_test(torch_encoder: Any, fp32: Any, int8: Any, static: Any, lengths: Sequence[int],
                        config: EncoderBenchConfig) -> list[tuple[str, str, Callable[[list[str]], np.ndarray], list[Call]]]:
    """(name, description, embed function, calls) for every variant, baseline first."""
    size, max_length = config.batch_size, config.max_length
    model, tokenizer = torch_encoder.model, torch_encoder.tokenizer
    arrival, singles = arrival_calls(lengths, size), arrival_calls(lengths, 1)
    return [
        (BASELINE, "HF PyTorch fp32, one message per call, padded to max_length (seed's way)",
         naive_embedder(model, tokenizer, max_length, pad=True), plan(lengths, singles, max_length)),
        ("a0_torch_per_message", "HF PyTorch fp32, one message per call, no padding (diagnostic)",
         naive_embedder(model, tokenizer, max_length, pad=False), plan(lengths, singles, None)),
        ("b_torch_batched", f"PyTorch fp32 MessageEncoder, batches of {size} in arrival order, dynamic padding",
         lambda batch: torch_encoder.embed(batch, batch_size=size), plan(lengths, arrival, None)),
        ("c_onnx_fp32", f"ONNX Runtime fp32 OnnxEncoder, batches of {size} in arrival order, dynamic padding",
         lambda batch: fp32.embed(batch, batch_size=size), plan(lengths, arrival, None)),
        ("d0_onnx_int8_arrival", f"ONNX Runtime int8, batches of {size} in arrival order, dynamic padding (diagnostic)",
         lambda batch: int8.embed(batch, batch_size=size), plan(lengths, arrival, None)),
        ("d_onnx_int8_bucketed", f"ONNX Runtime int8, length-bucketed batches of {size}, dynamic padding",
         lambda batch: int8.embed(batch, batch_size=size), plan(lengths, bucketed_calls(lengths, size), None)),
        # What a stream worker could do with its arrival-order micro-batch: sort it and run it in small
        # pieces, so one long message no longer pads 31 short ones (diagnostics for the worker's embed step).
        ("e8_onnx_int8_micro_sorted", f"ONNX Runtime int8, micro-batches of {size} in arrival order, each sorted "
         f"by length and run in pieces of {INNER}", lambda batch: int8.embed(batch, batch_size=INNER),
         plan_inner(lengths, arrival, INNER)),
        ("e1_onnx_int8_micro_unpadded", f"ONNX Runtime int8, micro-batches of {size} in arrival order, one message "
         "per run (no padding at all)", lambda batch: int8.embed(batch, batch_size=1), plan_inner(lengths, arrival, 1)),
        (STATIC, f"model2vec static table distilled from the checkpoint, batches of {size} in arrival order",
         lambda batch: static.embed(batch), [Call(index, [(len(index), 0)]) for index in arrival]),
    ]


# ---------------------------------------------------------------- the run


def run(config: EncoderBenchConfig, settings: Settings, out: Path | None = None) -> dict[str, Any]:
    """Run every variant at every thread count; write the JSON to `out` (None: do not write)."""
    import torch
    from transformers import AutoConfig

    from bench.messages import encoder_texts
    from models.encoder import MessageEncoder, default_base_model_dir
    from models.onnx_encoder import OnnxEncoder
    from models.static_encoder import StaticEncoder
    from training.embeddings import prepare_encoder, prepare_static_encoder

    recorder = Recorder("encoder", {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()})
    if config.messages < EncoderBenchConfig().messages:
        recorder.note(f"reduced size: {config.messages} messages (full run: {EncoderBenchConfig().messages})")
    model_dir = Path(config.model_dir or settings.base_model or default_base_model_dir())
    hf_config = AutoConfig.from_pretrained(model_dir)
    shape = ModelShape(hf_config.num_hidden_layers, hf_config.hidden_size, hf_config.intermediate_size)
    texts, source = encoder_texts(config.messages, source=config.source, seed=config.seed)
    with timed() as export_span:
        files = prepare_encoder(model_dir, config.cache_dir or settings.state_dir / "cache", config.max_length)
    with timed() as distill_span:  # the bench's own texts give the extra vocabulary: speed only, no quality here
        static_files = prepare_static_encoder(model_dir, config.cache_dir or settings.state_dir / "cache", texts,
                                              config.max_length)
    static = StaticEncoder.load(static_files.static_dir)
    torch_encoder = MessageEncoder.load(model_dir, threads=1, max_length=config.max_length)
    lengths = [len(ids) for ids in torch_encoder.tokenizer(texts, truncation=True, max_length=config.max_length)["input_ids"]]
    recorder.data.update({
        "data": {"source": source, "messages": len(texts), "tokens_mean": round(float(np.mean(lengths)), 1),
                 "tokens_p50": float(np.percentile(lengths, 50)), "tokens_p99": float(np.percentile(lengths, 99)),
                 "tokens_max": int(max(lengths)), "max_length": config.max_length},
        "model": {"dir": str(model_dir), **asdict(shape), "parameters": int(sum(p.numel() for p in torch_encoder.model.parameters())),
                  "gflop_per_message_at_mean_tokens": round(shape.flops(round(float(np.mean(lengths)))) / 1e9, 4),
                  "gflop_per_message_padded": round(shape.flops(config.max_length) / 1e9, 4),
                  "onnx_fp32": str(files.onnx), "onnx_int8": str(files.onnx_int8),
                  "onnx_fp32_mb": round(files.onnx.stat().st_size / 2**20, 1),
                  "onnx_int8_mb": round(files.onnx_int8.stat().st_size / 2**20, 1),
                  "export_seconds_this_run": round(export_span.wall, 1),
                  "static_dim": static.dim, "static_distill_seconds_this_run": round(distill_span.wall, 1)},
        "baseline": BASELINE,
    })
    runs: list[dict[str, Any]] = []
    for threads in config.threads:
        torch.set_num_threads(threads)
        gemm = gemm_gflops(threads, repeats=config.gemm_repeats)
        limit = {"wall": gemm["gflops_wall"], "per_cpu_s": gemm["gflops_per_cpu_s"]}
        fp32 = OnnxEncoder.load(files.onnx, files.encoder_dir, threads=threads, max_length=config.max_length)
        int8 = OnnxEncoder.load(files.onnx_int8, files.encoder_dir, threads=threads, max_length=config.max_length)
        variants = variants_under_test(torch_encoder, fp32, int8, static, lengths, config)
        results: list[VariantResult] = []
        vectors: dict[str, np.ndarray] = {}
        for name, description, embed, calls in variants:
            result, out_vectors = run_variant(name, description, embed, texts, calls, lengths, shape, limit,
                                              threads, config.warmup_calls)
            results.append(result)
            vectors[name] = out_vectors
        base = results[0]
        for result in results:
            result.speedup_vs_baseline = round(result.msgs_per_s / base.msgs_per_s, 2)
            result.speedup_vs_baseline_cpu = round(result.msgs_per_cpu_s / base.msgs_per_cpu_s, 2)
            if result.name != STATIC:  # the static table's vectors live in their own (PCA) space
                result.cosine_vs_torch_fp32 = cosine_stats(vectors[result.name], vectors["b_torch_batched"])
        runs.append({"threads": threads, "gemm": gemm, "variants": [asdict(r) for r in results]})
    torch.set_num_threads(1)
    recorder.data["runs"] = runs
    recorder.data["targets"] = targets(runs)
    analyse(recorder, runs)
    return recorder.finish(out)


def variant(run_: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in run_["variants"] if v["name"] == name)


def targets(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for run_ in runs:
        d = variant(run_, "d_onnx_int8_bucketed")
        out.append({
            "name": f"encoder (d) int8 bucketed vs (a) naive, {run_['threads']} thread(s)",
            "target": f">= {TARGET_SPEEDUP:g}x msgs/s", "value": d["speedup_vs_baseline"],
            "value_per_cpu_s": d["speedup_vs_baseline_cpu"], "met": d["speedup_vs_baseline"] >= TARGET_SPEEDUP,
        })
        static = variant(run_, STATIC)
        ratio = round(static["msgs_per_cpu_s"] / max(d["msgs_per_cpu_s"], 1e-9), 1)
        out.append({
            "name": f"fast tier (s) static vs (d) int8 bucketed, {run_['threads']} thread(s)",
            "target": f">= {TARGET_STATIC_VS_INT8:g}x msgs/CPU-s", "value": ratio,
            "value_per_cpu_s": ratio, "met": ratio >= TARGET_STATIC_VS_INT8,
        })
    return out


def analyse(recorder: Recorder, runs: list[dict[str, Any]]) -> None:
    """Plain-language reading of where the time goes (written into the JSON and the README table)."""
    first = runs[0]
    a, a0 = variant(first, BASELINE), variant(first, "a0_torch_per_message")
    b, c = variant(first, "b_torch_batched"), variant(first, "c_onnx_fp32")
    d0, d = variant(first, "d0_onnx_int8_arrival"), variant(first, "d_onnx_int8_bucketed")
    data = recorder.data["data"]
    recorder.analysis(
        f"At {first['threads']} thread(s): padding every message to {data['max_length']} tokens computes "
        f"{a['padded_tokens'] / max(a['real_tokens'], 1):.1f}x the real tokens (mean {data['tokens_mean']}); "
        f"dropping the padding alone gives {a0['msgs_per_s'] / a['msgs_per_s']:.1f}x, batching with dynamic padding "
        f"{b['msgs_per_s'] / a['msgs_per_s']:.1f}x, ONNX Runtime fp32 {c['msgs_per_s'] / a['msgs_per_s']:.1f}x, "
        f"int8 {d0['msgs_per_s'] / a['msgs_per_s']:.1f}x, int8 + length buckets {d['msgs_per_s'] / a['msgs_per_s']:.1f}x."
    )
    recorder.analysis(
        f"Compute use at {first['threads']} thread(s): the naive baseline runs at {a['roofline_pct_wall']}% of the "
        f"measured fp32 GEMM rate ({first['gemm']['gflops_wall']} GFLOP/s) on the FLOPs it executes, but only "
        f"{a['useful_roofline_pct_wall']}% on useful ones; batched torch fp32 reaches {b['roofline_pct_wall']}% "
        f"(short sequences make small matmuls, and tokenisation/framework overhead is a fixed cost per call). "
        f"int8 + buckets runs at {d['gflops_executed_wall']} fp32-equivalent GFLOP/s, {d['roofline_pct_wall']}% of the "
        f"fp32 limit (int8 kernels do more multiply-adds per instruction than fp32; CPU features: "
        f"{', '.join(recorder.data['machine']['cpu_flags']) or 'unknown'})."
    )
    e8, e1 = variant(first, "e8_onnx_int8_micro_sorted"), variant(first, "e1_onnx_int8_micro_unpadded")
    recorder.analysis(
        f"The stream worker embeds arrival-order micro-batches: padded to their longest message they compute "
        f"{d0['padded_tokens'] / max(d0['real_tokens'], 1):.1f}x the real tokens (d0: {d0['msgs_per_cpu_s']} msgs/CPU-s). "
        f"Sorting each micro-batch and running it in pieces of {INNER} computes "
        f"{e8['padded_tokens'] / max(e8['real_tokens'], 1):.2f}x ({e8['msgs_per_cpu_s']} msgs/CPU-s, "
        f"{e8['msgs_per_cpu_s'] / d0['msgs_per_cpu_s']:.1f}x d0); one message per run {e1['msgs_per_cpu_s']} msgs/CPU-s. "
        f"p50/p99 per micro-batch: d0 {d0['latency_ms']['p50']}/{d0['latency_ms']['p99']} ms, e8 "
        f"{e8['latency_ms']['p50']}/{e8['latency_ms']['p99']} ms."
    )
    if len(runs) > 1:
        second = runs[1]
        d2 = variant(second, "d_onnx_int8_bucketed")
        recorder.analysis(
            f"{second['threads']} threads vs {first['threads']}: int8 + buckets {d2['msgs_per_s']} vs {d['msgs_per_s']} "
            f"msgs/s ({d2['msgs_per_s'] / d['msgs_per_s']:.2f}x); per CPU-second {d2['msgs_per_cpu_s']} vs "
            f"{d['msgs_per_cpu_s']}. Small batches of short messages parallelise poorly inside one call, so the "
            "stream workers scale by processes (one thread each) instead."
        )
    s = variant(first, STATIC)
    recorder.analysis(
        f"The fast tier (s) embeds {s['msgs_per_cpu_s']} msgs/CPU-s at {first['threads']} thread(s), "
        f"{s['msgs_per_cpu_s'] / max(d['msgs_per_cpu_s'], 1e-9):.0f}x int8 + buckets (d): a table lookup and a mean "
        "per message instead of 6 transformer layers; what it keeps of the ranking is the validation ablation's "
        "question (reports/), not this bench's."
    )
    low = [v for r in runs for v in r["variants"] if v["name"].startswith("d") and v["cosine_vs_torch_fp32"]["mean"] < 0.98]
    if low:
        recorder.analysis(f"int8 vectors drift from fp32 (mean cosine {low[0]['cosine_vs_torch_fp32']['mean']}).")


# ---------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> None:
    from bench.cli import run_module

    run_module("encoder", argv or [])


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])

