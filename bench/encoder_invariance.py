"""Which int8 encoder to serve: speed, batch invariance and fidelity of the candidates, in one run.

    python -m bench.encoder_invariance [--messages 1000] [--rounds 3] [--source auto|real|simulator]

Writes bench/results/encoder-invariance.json (figures only, no text). Candidates, all exported from
the same checkpoint (default the packaged all-MiniLM-L6-v2), FFN down-projections kept fp32 in each
int8 one as training.export_onnx does:

- fp32: the exported graph unquantised;
- int8 dynamic per-tensor: ONNX Runtime's stock dynamic quantisation (the method served before):
  one activation scale per batch tensor, so a message's vector depends on its batch-mates;
- int8 static QDQ: activation scales fixed ahead of time from calibration on simulated chat
  (producers.simulator, never the unlicensed logs), one per tensor;
- int8 per-row, 8-bit weights: the dynamic graph rewritten to one activation scale per row;
- int8 per-row, 7-bit weights: the same with reduce_range (what `quantize_int8` writes).

Measured at one thread, on real chat where ../shared/data/raw exists (read at run time):
- msgs per CPU-second the way the stream worker embeds: micro-batches of 32 in arrival order, each
  sorted by length and run in pieces of 8 (`OnnxEncoder.embed(batch, batch_size=8)`); the variants
  take turns for `rounds` rounds and the median round is reported, so load drifts hit all alike;
- batch invariance: max |vector difference| of each message alone (batch 1) vs inside its batch of
  32 mixed lengths, over `groups` batches;
- cosine to fp32 over all messages (mean, p5, min).
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.machine import Recorder, default_output

RESULT_NAME = "encoder-invariance"
CHOSEN = "int8_per_row_w7"
ARRIVAL_BATCH = 32
PIECE = 8


@dataclass
class InvarianceBenchConfig:
    messages: int = 1000
    rounds: int = 3
    groups: int = 4  # batches of 32 checked message by message
    calibration_messages: int = 200
    max_length: int = 64
    source: str = "auto"
    seed: int = 0


@dataclass
class Candidate:
    name: str
    description: str
    path: Path


def build_candidates(folder: Path, model_dir: Path, calibration: Sequence[str], max_length: int) -> list[Candidate]:
    """Export once, then write every candidate file into `folder`."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from training.export_onnx import (
        down_projection_nodes,
        export_encoder_onnx,
        per_row_activations,
        quantize_int8,
    )

    fp32 = export_encoder_onnx(model_dir, folder / "fp32.onnx")
    kept = down_projection_nodes(fp32)
    root_logger = logging.getLogger()
    level = root_logger.level
    root_logger.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(fp32), str(folder / "dynamic.onnx"), weight_type=QuantType.QInt8, per_channel=True,
                         nodes_to_exclude=kept)
        model = onnx.load(str(folder / "dynamic.onnx"))
        per_row_activations(model.graph)
        onnx.save(model, str(folder / "per_row_w8.onnx"))
        quantize_static_qdq(fp32, folder / "static_qdq.onnx", model_dir, calibration, max_length, kept)
    finally:
        root_logger.setLevel(level)
    quantize_int8(fp32, folder / "per_row_w7.onnx")
    return [
        Candidate("fp32", "fp32 ONNX, unquantised", fp32),
        Candidate("int8_dynamic_per_tensor", "ORT dynamic int8, one activation scale per batch tensor (served before)",
                  folder / "dynamic.onnx"),
        Candidate("int8_static_qdq", f"ORT static int8 QDQ, per-tensor scales calibrated (MinMax) on "
                  f"{len(calibration)} simulated chat messages", folder / "static_qdq.onnx"),
        Candidate("int8_per_row_w8", "dynamic int8 rewritten to one activation scale per row, 8-bit weights",
                  folder / "per_row_w8.onnx"),
        Candidate(CHOSEN, "per-row activation scales, 7-bit weights (training.export_onnx.quantize_int8)",
                  folder / "per_row_w7.onnx"),
    ]


def quantize_static_qdq(fp32: Path, out: Path, model_dir: Path, texts: Sequence[str], max_length: int,
                        kept: list[str]) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds: Iterator[dict[str, np.ndarray]] = iter(
                {key: np.asarray([row], dtype=np.int64) for key, row in
                 tokenizer(text, truncation=True, max_length=max_length).items()
                 if key in ("input_ids", "attention_mask")}
                for text in texts)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8, reduce_range=True,
                    nodes_to_exclude=kept, op_types_to_quantize=["MatMul"],
                    extra_options={"MatMulConstBOnly": True})
    return out


def worker_embed(encoder: Any) -> Callable[[list[str]], np.ndarray]:
    """Arrival-order micro-batches of 32, each embedded as length-sorted pieces of 8 (the worker)."""
    def embed(texts: list[str]) -> np.ndarray:
        return np.concatenate([encoder.embed(texts[start : start + ARRIVAL_BATCH], batch_size=PIECE)
                               for start in range(0, len(texts), ARRIVAL_BATCH)])
    return embed


def batch_invariance(encoder: Any, texts: Sequence[str], groups: int) -> float:
    worst = 0.0
    for group in range(min(groups, len(texts) // ARRIVAL_BATCH)):
        rows = list(texts[group * ARRIVAL_BATCH : (group + 1) * ARRIVAL_BATCH])
        alone = np.stack([encoder.embed([text], batch_size=1)[0] for text in rows])
        together = encoder.embed(rows, batch_size=ARRIVAL_BATCH)
        worst = max(worst, float(np.abs(together - alone).max()))
    return worst


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def run(config: InvarianceBenchConfig, out: Path | None = None) -> dict[str, Any]:
    import torch

    from bench.messages import encoder_texts
    from models.encoder import default_base_model_dir
    from models.onnx_encoder import OnnxEncoder

    torch.set_num_threads(1)
    recorder = Recorder(RESULT_NAME, asdict(config))
    texts, description = encoder_texts(config.messages, source=config.source, seed=config.seed)
    calibration, calibration_source = encoder_texts(config.calibration_messages, source="simulator",
                                                    seed=config.seed + 1)
    model_dir = default_base_model_dir()
    recorder.data["data"] = {"source": description, "messages": len(texts), "calibration": calibration_source}
    with tempfile.TemporaryDirectory(prefix="encoder-invariance-") as tmp:
        start = time.perf_counter()
        candidates = build_candidates(Path(tmp), model_dir, calibration, config.max_length)
        recorder.data["build_seconds"] = round(time.perf_counter() - start, 1)
        encoders = {c.name: OnnxEncoder.load(c.path, model_dir, threads=1, max_length=config.max_length)
                    for c in candidates}
        embedders = {name: worker_embed(encoder) for name, encoder in encoders.items()}
        for embed in embedders.values():
            embed(texts[:ARRIVAL_BATCH])  # warm-up: first-call allocations
        rates: dict[str, list[float]] = {name: [] for name in encoders}
        vectors: dict[str, np.ndarray] = {}
        for _ in range(config.rounds):
            for name, embed in embedders.items():
                cpu = time.process_time()
                vectors[name] = embed(texts)
                rates[name].append(len(texts) / (time.process_time() - cpu))
        reference = vectors["fp32"]
        rows = []
        for candidate in candidates:
            cos = cosines(vectors[candidate.name], reference)
            rows.append({
                "name": candidate.name,
                "description": candidate.description,
                "file_mb": round(candidate.path.stat().st_size / 2**20, 1),
                "msgs_per_cpu_s": round(statistics.median(rates[candidate.name]), 1),
                "msgs_per_cpu_s_rounds": [round(r, 1) for r in rates[candidate.name]],
                "max_abs_dvector_batch1_vs_batch32": batch_invariance(encoders[candidate.name], texts, config.groups),
                "cosine_to_fp32": {"mean": round(float(cos.mean()), 5), "p5": round(float(np.percentile(cos, 5)), 5),
                                   "min": round(float(cos.min()), 5)},
            })
    by_name = {row["name"]: row for row in rows}
    for row in rows:
        row["speed_vs_dynamic_per_tensor"] = round(
            row["msgs_per_cpu_s"] / by_name["int8_dynamic_per_tensor"]["msgs_per_cpu_s"], 3)
    recorder.data["variants"] = rows
    recorder.data["chosen"] = CHOSEN
    chosen = by_name[CHOSEN]
    recorder.analysis(
        f"Served: {CHOSEN}: {chosen['msgs_per_cpu_s']} msgs/CPU-s ({chosen['speed_vs_dynamic_per_tensor']}x the "
        f"per-tensor dynamic int8, {round(chosen['msgs_per_cpu_s'] / by_name['fp32']['msgs_per_cpu_s'], 2)}x fp32), "
        f"max |dvector| batch 1 vs 32 {chosen['max_abs_dvector_batch1_vs_batch32']:.1e}, cosine to fp32 "
        f"{chosen['cosine_to_fp32']['mean']} mean / {chosen['cosine_to_fp32']['min']} min.")
    return recorder.finish(out)


def main(argv: list[str] | None = None) -> None:
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = InvarianceBenchConfig()
    parser.add_argument("--messages", type=int, default=defaults.messages)
    parser.add_argument("--rounds", type=int, default=defaults.rounds)
    parser.add_argument("--source", default=defaults.source)
    parser.add_argument("--out", type=Path, default=default_output(RESULT_NAME))
    args = parser.parse_args(argv)
    result = run(InvarianceBenchConfig(messages=args.messages, rounds=args.rounds, source=args.source), args.out)
    print(json.dumps({"variants": result["variants"], "analysis": result["analysis"]}, indent=1))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
