"""What every benchmark records beside its figures: the machine, its load, and its compute limit.

This VM's cores are shared with other jobs, so every result file carries the load average at the
start and the end of the run, and CPU-time figures (`time.process_time`: this process's CPU
seconds, all its threads) beside wall-clock ones. A figure per CPU-second barely moves when another
job takes a core; a wall-clock figure can halve.

The compute limit is measured, not looked up: an fp32 GEMM of a BERT-like shape through torch
(oneDNN/MKL), at each thread count the benchmarks use.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"

# (m, k, n): 1024 tokens through a 768 -> 3072 feed-forward layer, BERT-base's biggest matmul.
GEMM_SHAPE = (1024, 768, 3072)


# ---------------------------------------------------------------- clocks


@dataclass
class Span:
    """Wall and CPU seconds of one timed block."""

    wall: float = 0.0
    cpu: float = 0.0


@contextmanager
def timed() -> Iterator[Span]:
    span = Span()
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield span
    finally:
        span.wall = time.perf_counter() - wall
        span.cpu = time.process_time() - cpu


def percentiles_ms(seconds: Sequence[float], points: Sequence[int] = (50, 95, 99)) -> dict[str, float | None]:
    """{"p50": ms, ...} of a list of durations in seconds (None when empty)."""
    if not len(seconds):
        return {f"p{p}": None for p in points}
    values = np.percentile(np.asarray(seconds, dtype=np.float64), list(points)) * 1000.0
    return {f"p{p}": round(float(v), 2) for p, v in zip(points, values, strict=True)}


# ---------------------------------------------------------------- the machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    """The SIMD features that decide fp32 and int8 speed."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16")
                return [flag for flag in wanted if flag in flags]
    except OSError:
        pass
    return []


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _version(module: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine_info() -> dict[str, Any]:
    """The machine and software a result came from (the load average goes in separately, twice)."""
    return {
        "cpu_model": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gib": _ram_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "torch": _version("torch"),
        "onnxruntime": _version("onnxruntime"),
        "transformers": _version("transformers"),
        "faust": _version("faust-streaming"),
        "aiokafka": _version("aiokafka"),
        "git_commit": _git_commit(),
    }


# ---------------------------------------------------------------- the compute limit


def gemm_gflops(threads: int, *, shape: tuple[int, int, int] = GEMM_SHAPE, repeats: int = 12,
                rounds: int = 3) -> dict[str, float]:
    """Best fp32 matmul rate of `rounds` x `repeats` products at `threads` torch threads:
    GFLOP per wall second and per CPU second (2*m*k*n FLOPs per product)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        m, k, n = shape
        generator = torch.Generator().manual_seed(0)
        a = torch.randn(m, k, generator=generator)
        b = torch.randn(k, n, generator=generator)
        out = torch.empty(m, n)
        for _ in range(3):  # warm up: thread pool, caches, oneDNN kernel selection
            torch.matmul(a, b, out=out)
        flops = 2.0 * m * k * n * repeats
        best_wall, best_cpu = 0.0, 0.0
        for _ in range(rounds):
            with timed() as span:
                for _ in range(repeats):
                    torch.matmul(a, b, out=out)
            best_wall = max(best_wall, flops / span.wall / 1e9)
            best_cpu = max(best_cpu, flops / max(span.cpu, 1e-9) / 1e9)
        return {"gflops_wall": round(best_wall, 1), "gflops_per_cpu_s": round(best_cpu, 1), "threads": threads,
                "shape_mkn": list(shape)}
    finally:
        torch.set_num_threads(previous)


# ---------------------------------------------------------------- result files


class Recorder:
    """Collects one benchmark's result: machine, load at start/end, config, notes, figures."""

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        self.name = name
        self.data: dict[str, Any] = {
            "benchmark": name,
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {**machine_info(), "load_average_start": load_average()},
            "config": config,
            "notes": [],
            "analysis": [],
        }
        self._start = time.perf_counter()
        self.warn_if_busy()

    def note(self, text: str) -> None:
        self.data["notes"].append(text)

    def analysis(self, text: str) -> None:
        self.data["analysis"].append(text)

    def warn_if_busy(self) -> None:
        one_minute = self.data["machine"]["load_average_start"][0]
        cores = self.data["machine"]["usable_cores"] or 1
        if one_minute > 0.75 * cores:
            self.note(f"machine busy at start: 1-min load average {one_minute} on {cores} cores; wall-clock "
                      "figures are depressed, per-CPU-second figures and same-run ratios are the robust ones")

    def finish(self, out: Path | None) -> dict[str, Any]:
        """Stamp the end of the run and write the JSON (when `out` is given); returns the result."""
        self.data["machine"]["load_average_end"] = load_average()
        self.data["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        self.data["duration_s"] = round(time.perf_counter() - self._start, 1)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(finite(self.data), indent=2, default=str, allow_nan=False) + "\n",
                           encoding="utf-8")
            os.replace(tmp, out)
        return self.data


def finite(value: Any) -> Any:
    """NaN and infinities become None (null): strict JSON has no NaN (e.g. perplexity of an empty set)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def default_output(name: str) -> Path:
    return RESULTS_DIR / f"{name}.json"
