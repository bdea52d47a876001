"""`python -m tests.test_stream_agents.fake_model_worker worker`: the real worker app (real Kafka,
PostgreSQL, faust, tables, sink) with the scorer double in place of the ONNX model."""

from __future__ import annotations

from infra.services import resolve_bootstrap, resolve_database_url
from infra.settings import load_settings
from stream_agents.app import create_app
from tests.test_stream_agents.scorer_double import load_double

if __name__ == "__main__":
    settings = load_settings()
    database_url = resolve_database_url(settings) if settings.database_url else None
    create_app(settings, resolve_bootstrap(settings), database_url=database_url, loader=load_double).main()
