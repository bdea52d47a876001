"""`python -m tests.test_drills.slow_model_worker worker`: the real worker (Kafka, PostgreSQL, faust,
tables, sink) with the stream-agent tests' scorer double made slower, so a drill can overload it at a
rate any machine sustains: embedding costs DRILL_EMBED_SECONDS per message (default 1.5 ms, i.e. at
most ~650 messages/s), spent in the model's executor thread as the real encoder's time is."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from infra.services import resolve_bootstrap, resolve_database_url
from infra.settings import load_settings
from stream_agents.app import create_app
from tests.test_stream_agents.scorer_double import ScorerDouble, load_double

SECONDS_PER_TEXT = float(os.environ.get("DRILL_EMBED_SECONDS", "0.0015"))


class SlowDouble(ScorerDouble):
    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        time.sleep(SECONDS_PER_TEXT * len(texts))
        return super().embed(texts, batch_size)


def load_slow(version: Any, *, threads: int = 1) -> SlowDouble:
    double = load_double(version, threads=threads)
    return SlowDouble(double.version, double.feature_config, bias=double.bias)


if __name__ == "__main__":
    settings = load_settings()
    database_url = resolve_database_url(settings) if settings.database_url else None
    create_app(settings, resolve_bootstrap(settings), database_url=database_url, loader=load_slow).main()
