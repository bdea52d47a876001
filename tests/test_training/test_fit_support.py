"""Shared helpers for the classifier tests (no tests here).

- `fitted()`: one small model per test session (lru_cache), fitted on the seeded simulator
  (producers.simulator: 20 streams x 100 viewers, 15% donors), so the ONNX export of the encoder
  and the embeddings are made once.
- `synthetic_stream()`: a small hand-rolled generator for the retrain and PostgreSQL tests: donors
  (about 20%) write more often to the streamer (compliments, questions, requests) before they pay;
  activity is only weakly related to donating. Half the viewers are regulars, half are new.
"""

from __future__ import annotations

import atexit
import random
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path

from infra.events import ChatMessage, MessageKind
from infra.settings import Settings, load_settings
from training.build_dataset import DatasetConfig, StreamData, streams_from_simulator
from training.train_classifier import FitConfig, FitResults, main

TO_STREAMER = ["love your streams {n}", "you are the best streamer", "can you play {g} next?",
               "thank you for streaming {n}", "how long have you been playing {g}?", "please say hi to me",
               "your voice is so calming", "greetings from {c}, love the content"]
AMONG_CHAT = ["lol", "gg", "haha that was close", "{g} is hard", "who else is here from {c}", "lmao",
              "first time here", "chat is fast today", "kekw", "bruh", "W", "that jump though", "F"]
FILL = {"n": ["!!", "so much", "<3", "today"], "g": ["minecraft", "elden ring", "tetris", "mario kart"],
        "c": ["germany", "brazil", "japan", "canada"]}


def _text(rng: random.Random, templates: list[str]) -> str:
    return rng.choice(templates).format(**{k: rng.choice(v) for k, v in FILL.items()})


def synthetic_stream(index: int, *, seed: int = 0, n_viewers: int = 60, day: datetime | None = None) -> StreamData:
    rng = random.Random(seed * 1000 + index)
    stream_id = f"syn{seed}-{index:03d}"
    start = (day or datetime(2024, 5, 1, 18, tzinfo=UTC)) + timedelta(days=index)
    messages: list[ChatMessage] = []

    def add(viewer: str, at: float, text: str, **fields: object) -> None:
        messages.append(ChatMessage(
            stream_id=stream_id, message_id=f"{stream_id}-{len(messages)}", timestamp=start + timedelta(seconds=at),
            author_id=viewer, author_name=f"name {viewer}", text=text, **fields))

    for v in range(n_viewers):
        viewer = f"UCreg{v:03d}" if v < n_viewers // 2 else f"UCnew{index:03d}x{v:03d}"
        donor = rng.random() < 0.2
        member = rng.random() < 0.15
        n = max(1, int(rng.paretovariate(1.5)))  # heavy-tailed activity, same for donors and others
        times = sorted(rng.uniform(0, 5400) for _ in range(min(n, 40)))
        paid_at = rng.uniform(2700, 5400) if donor else None
        for at in times:
            if paid_at is not None and at > paid_at:
                break
            engaged = rng.random() < (0.55 if donor else 0.12)
            text = _text(rng, TO_STREAMER if engaged else AMONG_CHAT)
            if member and rng.random() < 0.3:
                text += " :_channelHeart:"
            add(viewer, at, text, is_member=member)
        if paid_at is not None:
            add(viewer, paid_at, f"PAID {rng.choice(['thanks', 'for the stream'])}", kind=MessageKind.PAID_MESSAGE,
                amount=rng.choice([2.0, 5.0, 20.0]), currency=rng.choice(["USD", "EUR", "JPY"]), is_member=member)
    return StreamData(stream_id=stream_id, messages=messages, source="synthetic")


def synthetic_streams(n: int, *, seed: int = 0, n_viewers: int = 60) -> list[StreamData]:
    return [synthetic_stream(i, seed=seed, n_viewers=n_viewers) for i in range(n)]


@lru_cache(maxsize=1)
def session_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="donorcast-classifier-tests-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def shared_cache() -> Path:
    """ONNX exports of the encoder and embedding caches, shared by every test of the session."""
    return session_dir() / "cache"


def small_fit_config(**overrides: object) -> FitConfig:
    values: dict[str, object] = dict(
        dataset=DatasetConfig(label="paid", n_snapshots=6, max_messages=16, held_out="none"),
        d_model=32, n_layers=2, n_heads=4, max_epochs=12, patience=4, batch_size=32, lr=2e-3,
        cache_dir=shared_cache(), progress=False,
    )
    values.update(overrides)
    return FitConfig(**values)  # type: ignore[arg-type]


def simulator_streams(n: int = 20, seed: int = 1, viewers: int = 100) -> list[StreamData]:
    return streams_from_simulator(n, seed, viewers=viewers, minutes=60, donor_share=0.15)


@lru_cache(maxsize=1)
def fitted() -> tuple[Settings, FitResults, list[StreamData]]:
    """One fit (both tracks, baselines, report) on 20 simulated streams, shared by the tests."""
    settings = load_settings(state_dir=session_dir() / "state")
    streams = simulator_streams()
    results = main(small_fit_config(), streams=streams, settings=settings)
    return settings, results, streams


@lru_cache(maxsize=1)
def fitted_static() -> tuple[Settings, FitResults, list[StreamData]]:
    """The same fit with the fast encoder tier (`fit --encoder-tier static`), chat track only."""
    settings = load_settings(state_dir=session_dir() / "state-static")
    streams = simulator_streams()
    config = small_fit_config(runtime_encoder="static_encoder", tracks=("chat",), deploy_track="chat", baselines=False)
    results = main(config, streams=streams, settings=settings)
    return settings, results, streams
