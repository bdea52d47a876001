"""Fixtures for the stream-agent tests: a worker subprocess on this test's topics and database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from infra.kafka import free_port
from infra.settings import Settings
from tests.test_stream_agents.harness import WorkerProcess, start_worker


@pytest.fixture
def worker_factory(topics: Settings, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers on this test's settings (topics created); every one is stopped at the end."""
    started: list[WorkerProcess] = []

    def start(*, model_double: bool = True, settings: Settings | None = None) -> WorkerProcess:
        worker = start_worker(settings or topics, free_port(), tmp_path / f"worker-{len(started)}.log",
                              model_double=model_double)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
