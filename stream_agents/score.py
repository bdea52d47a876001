"""The promoted model and the two calls a micro-batch makes to it: embed the new messages, score the
viewers they touched.

The model is loaded off the event loop, swapped in when the registry's promotion changes, and called
on one dedicated thread so ONNX Runtime never blocks the event loop and never competes with itself
(one intra-op thread per worker process, settings.worker_threads). A batch takes `runner.current`
once and uses it throughout, so every score names the version that produced it even while a swap
happens.

Scoring is one classifier call for all touched viewers, ranks from the stream leaderboards,
explanations for the top of each stream, one `DonorScore` per viewer. The model input is assembled
by `models.scorer.sequence_input`, the function training uses, from the stored window (embeddings,
stream-relative times, message numbers, texts for the per-message extras) and, for models that use
it, the viewer's history from before the stream.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np

from infra.events import DonorScore
from infra.repository import ViewerHistory
from models.registry import ModelRegistry, ModelVersion
from stream_agents.leaderboard import Leaderboards
from stream_agents.sequences import StoredMessage, ViewerSequence, ViewerUpdate, split_viewer_key

log = logging.getLogger(__name__)
T = TypeVar("T")

Loader = Callable[..., Any]  # (ModelVersion, *, threads) -> a scorer with the DonorScorer interface


def default_loader(version: ModelVersion, *, threads: int = 1) -> Any:
    from models.scorer import DonorScorer

    return DonorScorer.load(version, threads=threads)


def embedding_space(version: ModelVersion, scorer: Any) -> str:
    """Identifies the encoder: stored vectors are reused across model versions only when it is the same."""
    if version.encoder_tier == "static" and version.has_file("static_encoder"):
        with open(version.file("static_encoder") / "model.safetensors", "rb") as file:
            return f"{scorer.embedding_dim}:{hashlib.file_digest(file, 'sha256').hexdigest()[:16]}"
    for key in ("encoder_onnx_int8", "encoder_onnx"):
        if version.has_file(key):
            with open(version.file(key), "rb") as file:
                return f"{scorer.embedding_dim}:{hashlib.file_digest(file, 'sha256').hexdigest()[:16]}"
    return f"{scorer.embedding_dim}:{version.version}"


@dataclass(frozen=True)
class LoadedModel:
    scorer: Any  # models.scorer.DonorScorer
    version: str
    space: str
    tier: str = "bert"  # the encoder tier: "bert" or "static" (ModelVersion.encoder_tier)


class ModelRunner:
    def __init__(self, registry: ModelRegistry, *, threads: int = 1, loader: Loader = default_loader,
                 on_load: Callable[[LoadedModel], None] = lambda model: None) -> None:
        self.registry = registry
        self._on_load = on_load
        self.threads = threads
        self._loader = loader
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="donorcast-model")
        self._seen_signature: str | None = None
        self.current: LoadedModel | None = None
        self.last_error: str | None = None

    async def refresh(self) -> bool:
        """Load the promoted version if the promotion changed since the last call; True if swapped.
        A version that fails to load is reported and skipped; the previous model keeps serving."""
        signature = self.registry.promoted_signature()
        if signature is None or signature == self._seen_signature:
            return False
        self._seen_signature = signature
        version = self.registry.promoted()
        if version is None or (self.current is not None and self.current.version == version.version):
            return False
        try:
            scorer = await asyncio.to_thread(self._loader, version, threads=self.threads)
            space = await asyncio.to_thread(embedding_space, version, scorer)
        except Exception as error:  # noqa: BLE001 - a broken version must not stop a serving worker
            self.last_error = f"cannot load model {version.version}: {type(error).__name__}: {error}"
            log.error(self.last_error)
            return False
        self.current = LoadedModel(scorer=scorer, version=version.version, space=space, tier=version.encoder_tier)
        self.last_error = None
        self._on_load(self.current)
        log.info("serving model %s (embedding space %s)", version.version, space)
        return True

    async def wait_for_model(self, poll_seconds: float = 2.0) -> LoadedModel:
        """The current model; waits (polling the registry) while none is promoted yet."""
        warned = False
        while self.current is None:
            await self.refresh()
            if self.current is None:
                if not warned:
                    log.warning(
                        "no promoted model in %s yet: waiting (train one with `donorcast fit`, "
                        "or run `donorcast demo`)", self.registry.root,
                    )
                    warned = True
                await asyncio.sleep(poll_seconds)
        return self.current

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run a model call on the model thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


async def embed_texts(runner: ModelRunner, model: LoadedModel, texts: Sequence[str]) -> np.ndarray:
    """(N, D) float16 embeddings of raw texts (the scorer applies the model's own preprocessing)."""
    if not texts:
        return np.zeros((0, model.scorer.embedding_dim), dtype=np.float16)
    vectors = await runner.call(model.scorer.embed, list(texts))
    return np.asarray(vectors, dtype=np.float16)


# Leave-one-out explanations cost T+1 classifier rows per viewer: computed where someone looks (the
# top of each stream's leaderboard); any other viewer is explained on request (GET /viewers/...).
EXPLAIN_TOP_K = 20
TOP_MESSAGES = 3


def model_input(model: LoadedModel, header: ViewerSequence, window: Sequence[StoredMessage],
                history: ViewerHistory | None = None) -> Any:
    """A `models.scorer.ViewerSequenceInput` for one viewer (window oldest first, at least one message)."""
    from models.scorer import sequence_input

    scorer = model.scorer
    return sequence_input(
        np.stack([m.embedding for m in window]).astype(np.float32),
        [m.seconds_since_start for m in window],
        texts=[scorer.preprocess(m.text) for m in window],
        message_numbers=[m.number for m in window],
        config=scorer.feature_config,
        previous_seconds=header.previous_seconds,
        history=history,
        message_ids=[m.message_id for m in window],
    )


def explain_many(scorer: Any, inputs: Sequence[Any], k: int = TOP_MESSAGES) -> list[list[int]]:
    return [scorer.explain(sequence, k=k) for sequence in inputs]


def top_message_ids(message_ids: Sequence[str], indices: Sequence[int], max_messages: int) -> tuple[str, ...]:
    """Explanation indices refer to the scorer's tail (its newest `max_messages`); map them to message ids."""
    tail = tuple(message_ids)[-max_messages:]
    return tuple(tail[i] for i in indices if 0 <= i < len(tail))


def make_score(key: str, header: ViewerSequence, model: LoadedModel, rank: int | None,
               top_ids: tuple[str, ...], produced_at: float | None) -> DonorScore:
    stream_id, viewer_id = split_viewer_key(key)
    return DonorScore(
        stream_id=stream_id, viewer_id=viewer_id, viewer_name=header.viewer_name,
        probability=float(header.probability or 0.0), rank=rank, n_messages=header.count,
        model_version=model.version, top_message_ids=top_ids,
        event_time=datetime.fromtimestamp(header.last_time or 0.0, UTC),
        scored_at=datetime.now(UTC), produced_at=produced_at,
    )


async def score_viewers(
    runner: ModelRunner,
    model: LoadedModel,
    boards: Leaderboards,
    updates: Sequence[ViewerUpdate],
    histories: dict[tuple[str, str], ViewerHistory | None] | None = None,
) -> list[DonorScore]:
    """Score every update with a non-empty window; headers get probability and version, boards the rank."""
    updates = [u for u in updates if u.window]
    if not updates:
        return []
    histories = histories or {}
    inputs = [model_input(model, u.header, u.window, histories.get(split_viewer_key(u.key))) for u in updates]
    probabilities = await runner.call(model.scorer.score, inputs)
    now = time.time()
    for update, probability in zip(updates, np.asarray(probabilities).reshape(-1), strict=True):
        update.header.probability, update.header.model_version = float(probability), model.version
        update.header.updated_at, update.changed = now, True
        boards.update(update.key, update.header)
    ranks = [boards.rank(u.key) for u in updates]
    explain_rows = [i for i, rank in enumerate(ranks) if rank is not None and rank <= EXPLAIN_TOP_K]
    explanations = await runner.call(explain_many, model.scorer, [inputs[i] for i in explain_rows])
    top_ids = dict(zip(explain_rows, explanations, strict=True))
    limit = model.scorer.feature_config.max_messages
    return [
        make_score(
            u.key, u.header, model, ranks[i], top_message_ids(inputs[i].message_ids, top_ids.get(i, []), limit),
            u.newest.message.produced_at if u.newest else None,
        )
        for i, u in enumerate(updates)
    ]
