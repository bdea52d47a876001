"""ONNX export of the message encoder (fp32 and int8) and of a registry version's classifier.

The encoder graph includes mean pooling: inputs `input_ids`, `attention_mask` (int64, dynamic batch
and sequence axes), output `embeddings` (batch, hidden), opset 17. It uses torch.onnx's TorchScript
exporter: on this model the dynamo exporter gives the same graph numerically but takes ~15 s instead
of ~1.5 s, which matters for `donorcast fit` and the test suite on small CPUs.

int8 is ONNX Runtime's dynamic quantisation with one change that makes it batch-invariant. Weights
are int8 per output channel (7-bit range, so no CPU's int16 pair sums saturate). Activations are quantised at run time, but with one scale per row (per
token) instead of ORT's one scale per batch tensor: with a per-tensor scale a message's vector
depended on its batch-mates (the largest activation anywhere in the batch set everyone's resolution;
the same message moved by up to 0.22 in one coordinate between batch 1 and batch 32), so live and
offline scores disagreed. Per-row scales are computed from the row alone and the integer matmul is
exact, so a vector is the same whatever it is batched with (max |difference| ~1e-7, fp32 rounding of
the attention over a different padded length), and finer scales are a little closer to fp32 too.
Measured against fp32 and static int8 in bench/results/encoder-invariance.json.

One class of layer stays fp32: the feed-forward down-projections (weights with more input rows than
output columns, i.e. 1536->384 in MiniLM). Their input is the GELU output, whose few huge outlier
features ruin a shared activation scale (Bondarenko et al. 2021, "Understanding and Overcoming the
Challenges of Efficient Transformer Quantization"); per row they still cost cosine to fp32.

`donorcast export --version V` writes encoder.onnx, encoder.int8.onnx (and classifier.onnx when the
version has a classifier) into the version folder and records them in its manifest.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

console = Console(stderr=True)

OPSET = 17
ENCODER_ONNX = "encoder.onnx"
ENCODER_ONNX_INT8 = "encoder.int8.onnx"
CLASSIFIER_ONNX = "classifier.onnx"
# What quantize_int8 does, stored in the int8 file's metadata under METHOD_KEY. Change it with the
# method: it belongs in the key of cached exports and embeddings, so they never outlive a method.
METHOD_KEY = "donorcast.quantization"
INT8_METHOD = "int8-rowwise-w7-v1"


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
    """int8 (7-bit) weights per output channel, activations quantised per row at run time
    (batch-invariant); FFN down-projections kept fp32. The method is recorded in the file's metadata (INT8_METHOD)."""
    import logging

    import onnx
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
            # 7-bit weights: x86 AVX2's u8 x s8 instruction (vpmaddubsw) adds two products in int16,
            # which saturates for 8-bit weights against activations near 255; at 7 bits it never does,
            # so the integer matmul is exact on every CPU (and closer to fp32 on this one).
            reduce_range=True,
            nodes_to_exclude=down_projection_nodes(fp32_path),
        )
    finally:
        quant_logger.setLevel(level)
    model = onnx.load(str(int8_path))
    if per_row_activations(model.graph) == 0:
        raise ValueError(f"{fp32_path}: quantisation found no MatMul with a constant weight to quantise")
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, METHOD_KEY: INT8_METHOD})
    onnx.checker.check_model(model)
    onnx.save(model, str(int8_path))
    return int8_path


def per_row_activations(graph: Any) -> int:
    """Rewrite every DynamicQuantizeLinear of a dynamically quantised graph (in place) to quantise
    each row (last axis) with its own scale; returns how many were rewritten.

    ORT's pattern per quantised MatMul is
        DynamicQuantizeLinear(x) -> (q, s, zp);  MatMulInteger(q, W, zp, W_zp) -> Cast -> Mul(., s * W_s).
    It becomes symmetric per-row int8 with ORT's uint8 kernel (q + 128, zero point 128):
        s = max(|x|, axis=-1) / 127;  q = Round(x / s) + 128;  ... -> Cast -> Mul(., W_s) -> Mul(., s).
    The row scale is applied in its own Mul, after the weight scale, on purpose: ORT's
    MatMulIntegerToFloat fusion takes `Mul(cast, Mul(s, W_s))` for a per-tensor activation scale and
    silently miscomputes a per-row one (cosine to fp32 ~0.7 at ORT_ENABLE_ALL).
    """
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    replaced: dict[str, list[Any]] = {}
    dropped: set[str] = set()
    constants = []
    for node in graph.node:
        if node.op_type != "DynamicQuantizeLinear":
            continue
        (x,), (q, scale, zero_point) = node.input, node.output
        p = f"{node.name}/row"
        replaced[node.name] = [
            helper.make_node("Abs", [x], [f"{p}/abs"], name=f"{p}/Abs"),
            helper.make_node("ReduceMax", [f"{p}/abs"], [f"{p}/max"], name=f"{p}/ReduceMax", axes=[-1], keepdims=1),
            helper.make_node("Max", [f"{p}/max", f"{p}/tiny"], [f"{p}/range"], name=f"{p}/Max"),  # all-zero rows
            helper.make_node("Div", [f"{p}/range", f"{p}/127"], [scale], name=f"{p}/Scale"),
            helper.make_node("Div", [x, scale], [f"{p}/scaled"], name=f"{p}/Div"),
            helper.make_node("Round", [f"{p}/scaled"], [f"{p}/rounded"], name=f"{p}/Round"),
            helper.make_node("Add", [f"{p}/rounded", f"{p}/128"], [f"{p}/shifted"], name=f"{p}/Shift"),
            helper.make_node("Cast", [f"{p}/shifted"], [q], name=f"{p}/Cast", to=TensorProto.UINT8),
        ]
        constants += [numpy_helper.from_array(np.array(value, dtype), name) for value, dtype, name in (
            (1e-12, np.float32, f"{p}/tiny"), (127.0, np.float32, f"{p}/127"), (128.0, np.float32, f"{p}/128"),
            (128, np.uint8, zero_point))]
        for scales_mul in consumers[scale]:
            if scales_mul.op_type != "Mul":
                raise ValueError(f"unexpected quantised graph: {scale} feeds {scales_mul.op_type}, not Mul")
            (weight_scale,) = [name for name in scales_mul.input if name != scale]
            for rescale in consumers[scales_mul.output[0]]:
                (integer_product,) = [name for name in rescale.input if name != scales_mul.output[0]]
                r = rescale.name
                replaced[r] = [
                    helper.make_node("Mul", [integer_product, weight_scale], [f"{r}/w"], name=f"{r}/weight_scale"),
                    helper.make_node("Mul", [f"{r}/w", scale], list(rescale.output), name=f"{r}/row_scale"),
                ]
            dropped.add(scales_mul.name)
    nodes = [new for node in graph.node if node.name not in dropped for new in replaced.get(node.name, [node])]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(constants)
    return sum(1 for node in graph.node if node.name.endswith("/row/Scale"))


def quantization_method(onnx_path: Path) -> str:
    """INT8_METHOD for a file quantize_int8 wrote today; "dynamic-per-tensor" for an older int8 file
    (batch-dependent vectors); "fp32" for an unquantised graph."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    recorded = {p.key: p.value for p in model.metadata_props}.get(METHOD_KEY)
    if recorded:
        return recorded
    if any(node.op_type == "DynamicQuantizeLinear" for node in model.graph.node):
        return "dynamic-per-tensor"
    return "fp32"


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
    """Export the encoder to ONNX (fp32 + batch-invariant int8) and, for a registry version, its classifier."""
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
