"""Where a process spends its time: py-spy samples, summarised by function and by component.

`record(pid, seconds, out)` runs `py-spy record --format raw` (collapsed stacks) on a live process;
`summarise(path)` turns the stacks into the few lines a result file needs: the top functions by
samples spent in them (self time) and the share per component (ONNX Runtime, tokenizer, Kafka
client, faust, pydantic, our code ...), attributed by the innermost frame from a known package.
py-spy is optional: without it, `record` returns None and the benchmark says so in its notes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

# (substring of a frame's file path, component), first match from the innermost frame outwards.
COMPONENTS: tuple[tuple[str, str], ...] = (
    ("onnxruntime", "ONNX Runtime (encoder, classifier)"),
    ("tokenizers", "tokenizer"),
    ("transformers/tokenization", "tokenizer"),
    ("transformers/", "transformers (tokenizer glue)"),
    ("torch/", "torch"),
    ("numpy/", "numpy"),
    ("pydantic", "pydantic (parse/serialise events)"),
    ("aiokafka", "Kafka client (aiokafka)"),
    ("kafka/", "Kafka client (aiokafka)"),
    ("faust/", "faust (streams, tables, changelogs)"),
    ("mode/", "faust (streams, tables, changelogs)"),
    ("asyncpg", "PostgreSQL client"),
    ("prometheus_client", "metrics"),
    ("stream_agents/persist", "our code: PostgreSQL sink"),
    ("infra/repository", "our code: PostgreSQL sink"),
    ("stream_agents/", "our code: stream agents"),
    ("models/", "our code: models"),
    ("infra/", "our code: infra"),
    ("json/", "json"),
    ("asyncio/", "asyncio event loop"),
    ("concurrent/futures", "thread pool hand-off"),
    ("threading.py", "thread pool hand-off"),
)


# Innermost frames that mean "waiting", not working (py-spy cannot always tell in --nonblocking mode).
IDLE_LEAVES: tuple[str, ...] = ("select (selectors.py", "_worker (concurrent/futures/thread.py", "wait (threading.py",
                                "Condition.wait (threading.py", "SimpleQueue.get", "Event.wait (threading.py")

# (label, function name ends with, file path contains): share of samples with such a frame anywhere.
INCLUSIVE: tuple[tuple[str, str, str], ...] = (
    ("process_batch (one micro-batch, all steps)", "process_batch", "stream_agents/pipeline.py"),
    ("encoder: OnnxEncoder.embed", "embed", "models/onnx_encoder.py"),
    ("tokenizer (inside embed)", "__call__", "tokenization_utils"),
    ("classifier: DonorScorer.score", ".score", "models/scorer.py"),
    ("explanations: DonorScorer.explain", ".explain", "models/scorer.py"),
    ("sequence windows: load_updates/append", "load_updates", "stream_agents/sequences.py"),
    ("publish scores", "publish", "stream_agents/pipeline.py"),
    ("validate/parse chat records", "sort_events", "stream_agents/validate.py"),
    ("PostgreSQL sink", "run", "stream_agents/persist.py"),
    ("faust table changelog writes", "", "faust/tables"),
    ("Kafka client", "", "aiokafka/"),
)


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return found if Path(found).is_file() else None


def record(pid: int, seconds: float, out: Path, rate: int = 50) -> subprocess.Popen[bytes] | None:
    """Start sampling `pid` for `seconds` in the background; None when py-spy is not installed."""
    binary = py_spy()
    if binary is None:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(  # noqa: S603 - fixed argv
        [binary, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))), "--rate", str(rate),
         "--format", "raw", "--nonblocking", "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def _frames(stack: str) -> list[str]:
    return [f for f in stack.split(";") if f]


def _matches(frame: str, suffix: str, path: str) -> bool:
    name, _, where = frame.partition(" (")
    return name.endswith(suffix) and path in where


def component_of(frames: list[str]) -> str:
    if any(needle in frames[-1] for needle in IDLE_LEAVES):
        return "idle (waiting for I/O or work)"
    for frame in reversed(frames):
        for needle, name in COMPONENTS:
            if needle in frame:
                return name
    return "other"


def short_frame(frame: str) -> str:
    """'func (/long/path/site-packages/pkg/mod.py:12)' -> 'func (pkg/mod.py:12)'."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})" if where else name


def summarise(path: Path, top: int = 12) -> dict[str, Any] | None:
    """Self-time top list and per-component shares of a py-spy raw (collapsed) file."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    self_time: Counter[str] = Counter()
    components: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = _frames(stack)
        if not frames:
            continue
        total += count
        threads[frames[0].split(" (", 1)[0]] += count
        self_time[short_frame(frames[-1])] += count
        components[component_of(frames)] += count
        for label, suffix, path in INCLUSIVE:
            if any(_matches(frame, suffix, path) for frame in frames):
                inclusive[label] += count
    if total == 0:
        return None
    return {
        "samples": total,
        "by_component_pct": {name: round(100 * n / total, 1) for name, n in components.most_common()},
        "inclusive_pct": {label: round(100 * inclusive[label] / total, 1) for label, _, _ in INCLUSIVE},
        "top_self_pct": [{"frame": name, "pct": round(100 * n / total, 1)} for name, n in self_time.most_common(top)],
        "by_thread_pct": {name: round(100 * n / total, 1) for name, n in threads.most_common(6)},
    }
