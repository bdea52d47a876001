"""The promoted model: loaded off the event loop, swapped in when the registry's promotion changes, and
called on one dedicated thread so ONNX Runtime never blocks the event loop and never competes with
itself (one intra-op thread per worker process, settings.worker_threads).

A batch takes `runner.current` once and uses it throughout, so every score names the version that
produced it even while a swap happens.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from models.registry import ModelRegistry, ModelVersion

log = logging.getLogger(__name__)
T = TypeVar("T")

Loader = Callable[..., Any]  # (ModelVersion, *, threads) -> a scorer with the DonorScorer interface


def default_loader(version: ModelVersion, *, threads: int = 1) -> Any:
    from models.scorer import DonorScorer

    return DonorScorer.load(version, threads=threads)


def embedding_space(version: ModelVersion, scorer: Any) -> str:
    """Identifies the encoder: stored vectors are reused across model versions only when it is the same."""
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
        self.current = LoadedModel(scorer=scorer, version=version.version, space=space)
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
