"""ONNX export of the message encoder (fp32 and int8) and of a registry version's classifier.

The encoder graph includes mean pooling: inputs `input_ids`, `attention_mask` (int64, dynamic batch
and sequence axes), output `embeddings` (batch, hidden), opset 17. It uses torch.onnx's TorchScript
exporter: on this model the dynamo exporter gives the same graph numerically but takes ~15 s instead
of ~1.5 s, which matters for `donorcast fit` and the test suite on small CPUs.

int8 is ONNX Runtime dynamic quantisation: int8 weights per output channel, uint8 activations
quantised per tensor at run time. One class of layer stays fp32: the feed-forward down-projections
(weights with more input rows than output columns, i.e. 1536->384 in MiniLM). Their input is the
GELU output, whose few huge outlier features ruin a per-tensor activation scale (Bondarenko et al.
2021, "Understanding and Overcoming the Challenges of Efficient Transformer Quantization"). On real
RBTV/HundredBeans chat this takes the mean cosine to fp32 from ~0.988 to ~0.993 at little speed cost.

`donorcast export --version V` writes encoder.onnx, encoder.int8.onnx (and classifier.onnx when the
version has a classifier) into the version folder and records them in its manifest.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)

OPSET = 17
ENCODER_ONNX = "encoder.onnx"
ENCODER_ONNX_INT8 = "encoder.int8.onnx"
CLASSIFIER_ONNX = "classifier.onnx"


def export_encoder_onnx(model_dir: Path, out_path: Path) -> Path:
    """Export a HF encoder checkpoint (with mean pooling) to one self-contained fp32 ONNX file."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from models.encoder import mean_pool

    class PooledEncoder(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return mean_pool(hidden, attention_mask)

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = PooledEncoder(AutoModel.from_pretrained(model_dir).eval()).eval()
    # Batch 2 with unequal lengths, so the trace contains real padding and no axis is 1.
    example = tokenizer(["an example chat message", "hi"], padding=True, return_tensors="pt")
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "embeddings": {0: "batch"}}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The tracer notes that Python-level checks in transformers' mask code become constants; they
        # are constant for this graph (a mask is always given, no KV cache), and parity tests at
        # batch 1..32 and many lengths confirm the graph is general.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example["input_ids"], example["attention_mask"]),
            str(out_path),
            input_names=["input_ids", "attention_mask"],
            output_names=["embeddings"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    return out_path


def down_projection_nodes(onnx_path: Path) -> list[str]:
    """MatMul nodes whose constant weight maps more inputs to fewer outputs (FFN down-projections)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    found = []
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        weight = next((shapes[name] for name in node.input if name in shapes), None)
        if weight is not None and len(weight) == 2 and weight[0] > weight[1]:
            found.append(node.name)
    return found


def quantize_int8(fp32_path: Path, int8_path: Path) -> Path:
    """Dynamic int8 quantisation (QInt8 per-channel weights), FFN down-projections kept fp32."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    quant_logger = logging.getLogger()
    level = quant_logger.level
    quant_logger.setLevel(logging.ERROR)  # silence "consider pre-processing": shapes are already inferred
    try:
        quantize_dynamic(
            str(fp32_path),
            str(int8_path),
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=down_projection_nodes(fp32_path),
        )
    finally:
        quant_logger.setLevel(level)
    return int8_path


def export_version(registry_root: Path, version: str) -> dict[str, float]:
    """Export a registry version's encoder (fp32 + int8) and classifier into its folder and record
    them in its manifest. Files are written beside their target and renamed into place, so a worker
    loading this version meanwhile reads the old file or the new one, never half of one.
    Returns {file key: seconds taken}."""
    from models.registry import ModelRegistry

    registry = ModelRegistry(registry_root)
    model = registry.get(version)
    files = dict(model.manifest.get("files", {}))
    timings: dict[str, float] = {}
    staging = model.path / ".export"
    staging.mkdir(exist_ok=True)
    try:
        start = time.perf_counter()
        export_encoder_onnx(model.file("encoder_dir"), staging / ENCODER_ONNX)
        timings["encoder_onnx"] = time.perf_counter() - start

        start = time.perf_counter()
        quantize_int8(staging / ENCODER_ONNX, staging / ENCODER_ONNX_INT8)
        timings["encoder_onnx_int8"] = time.perf_counter() - start

        if model.has_file("classifier_pt"):
            from models import classifier

            start = time.perf_counter()
            network = classifier.load_classifier(model.file("classifier_pt"))
            classifier.export_classifier_onnx(network, staging / CLASSIFIER_ONNX)
            timings["classifier_onnx"] = time.perf_counter() - start

        for key, name in (("encoder_onnx", ENCODER_ONNX), ("encoder_onnx_int8", ENCODER_ONNX_INT8),
                          ("classifier_onnx", CLASSIFIER_ONNX)):
            if (staging / name).is_file():
                os.replace(staging / name, model.path / name)
                files[key] = name
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    registry.commit(version, {**model.manifest, "files": files})
    return timings


def export_command(
    ctx: typer.Context,
    version: Annotated[
        str | None, typer.Option("--version", "-v", help="registry version to export (writes into its folder)")
    ] = None,
    model_dir: Annotated[
        Path | None, typer.Option(help="or: a HF encoder checkpoint dir to export on its own")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="fp32 .onnx path for --model-dir (default MODEL_DIR/onnx/encoder.onnx)")
    ] = None,
) -> None:
    """Export the encoder to ONNX (fp32 + dynamic int8) and, for a registry version, its classifier."""
    import torch

    from infra.cli import settings_from
    from infra.errors import InputError

    settings = settings_from(ctx)
    torch.set_num_threads(settings.worker_threads)
    if (version is None) == (model_dir is None):
        raise InputError("give exactly one of --version (a registry version) or --model-dir (a checkpoint dir)")

    if version is not None:
        with console.status(f"exporting {version} ..."):
            timings = export_version(settings.registry_dir, version)
        for key, seconds in timings.items():
            console.print(f"{key:<18} {seconds:6.1f} s")
        console.print(f"[green]exported[/green] {version} into {settings.registry_dir / version}")
        return

    assert model_dir is not None
    fp32 = out or model_dir / "onnx" / ENCODER_ONNX
    int8 = fp32.with_name(fp32.stem + ".int8.onnx")
    with console.status("exporting encoder ..."):
        start = time.perf_counter()
        export_encoder_onnx(model_dir, fp32)
        exported = time.perf_counter() - start
        quantize_int8(fp32, int8)
        quantized = time.perf_counter() - start - exported
    console.print(f"fp32 {fp32} ({exported:.1f} s)\nint8 {int8} ({quantized:.1f} s)")
