"""The chat the benchmarks feed through: real chat when ../shared/data/raw is present, else simulated.

Real chat is read at run time only (nothing from it is written anywhere: result files hold counts
and timings, never text). The held-out evaluation data (RBTV 2017-09, HundredBeans wxc-indonesia)
is not used here either, out of habit: benchmarks are not evaluation, but nothing needs them.

- `encoder_texts(n)`: n model-input texts drawn at random (seeded) from several real streams of both
  languages, so lengths and vocab mix the way live chat does.
- `pipeline_messages(n)`: whole streams in time order until n messages, as a replay would send them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from infra.events import ChatMessage

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RBTV_MONTHS = ("2017/07", "2017/08")  # 2017/09 is held out for evaluation
HUNDREDBEANS_CHANNEL = "anonim"  # wxc-indonesia is held out for evaluation
SOURCES = ("auto", "real", "simulator")


@dataclass
class ChatSample:
    messages: list[ChatMessage]
    source: str  # what they are, for the result file (no text)


def raw_dir(data_dir: Path | None = None) -> Path:
    return (data_dir or SHARED_DATA) / "raw"


def real_stream_files(data_dir: Path | None = None) -> list[Path]:
    """RBTV days and HundredBeans streams, interleaved (one of each in turn) so a prefix mixes both."""
    root = raw_dir(data_dir)
    rbtv = [p for month in RBTV_MONTHS for p in sorted((root / "rbtv-youtube-chatlogs" / month).glob("*.txt"))]
    beans = sorted((root / "hundredbeans-yt-livechat" / HUNDREDBEANS_CHANNEL / "history").glob("*.json"))
    mixed: list[Path] = []
    for i in range(max(len(rbtv), len(beans))):
        mixed += [p for p in (rbtv[i] if i < len(rbtv) else None, beans[i] if i < len(beans) else None) if p]
    return mixed


def has_real_chat(data_dir: Path | None = None) -> bool:
    return bool(real_stream_files(data_dir))


def _read_stream(path: Path) -> list[ChatMessage]:
    from producers.readers import read_chat_file

    messages = [m for m in read_chat_file(path) if isinstance(m, ChatMessage)]
    messages.sort(key=lambda m: m.timestamp)  # HundredBeans files are in Firestore order
    return messages


def _resolve(source: str, data_dir: Path | None) -> str:
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)} (got {source!r})")
    if source == "auto":
        return "real" if has_real_chat(data_dir) else "simulator"
    if source == "real" and not has_real_chat(data_dir):
        raise FileNotFoundError(f"no real chat under {raw_dir(data_dir)}")
    return source


def _simulated(n: int, seed: int) -> list[ChatMessage]:
    from producers.simulator import simulate

    out: list[ChatMessage] = []
    batch = 0
    while len(out) < n:
        # ~1.4k messages per default stream; ask for enough streams in one go (one community).
        streams = simulate(max(1, (n - len(out)) // 1200 + 1), seed + 1000 * batch)
        for stream in streams:
            out.extend(stream.messages)
        batch += 1
    return out


def pipeline_messages(n: int, *, source: str = "auto", seed: int = 0, data_dir: Path | None = None) -> ChatSample:
    """About n messages (exactly n, unless the data runs out), whole streams first, each in time order."""
    kind = _resolve(source, data_dir)
    if kind == "simulator":
        messages = _simulated(n, seed)[:n]
        return ChatSample(messages, f"{len(messages)} messages of simulated chat (producers.simulator, seed {seed})")
    messages: list[ChatMessage] = []
    used = 0
    for path in real_stream_files(data_dir):
        if len(messages) >= n:
            break
        messages.extend(_read_stream(path)[: n - len(messages)])
        used += 1
    return ChatSample(messages, f"{len(messages)} messages of real chat from {used} streams (RBTV 2017-07/08 and "
                                f"HundredBeans '{HUNDREDBEANS_CHANNEL}'; read at run time and not stored)")


def encoder_texts(n: int, *, source: str = "auto", seed: int = 0, data_dir: Path | None = None,
                  streams: int = 8) -> tuple[list[str], str]:
    """n model-input texts, a seeded random draw (in random order) from `streams` streams."""
    kind = _resolve(source, data_dir)
    if kind == "simulator":
        pool = [m.text for m in _simulated(max(n * 2, 2000), seed) if m.is_model_input and m.text]
        description = f"simulated chat (producers.simulator, seed {seed})"
    else:
        files = real_stream_files(data_dir)
        rng_files = random.Random(seed)
        chosen = rng_files.sample(files, min(streams, len(files)))
        pool = [m.text for path in chosen for m in _read_stream(path) if m.is_model_input and m.text]
        description = (f"real chat drawn at random from {len(chosen)} streams (RBTV 2017-07/08 and HundredBeans "
                       f"'{HUNDREDBEANS_CHANNEL}'; read at run time and not stored)")
    rng = random.Random(seed)
    texts = rng.sample(pool, n) if n <= len(pool) else [rng.choice(pool) for _ in range(n)]
    return texts, description
