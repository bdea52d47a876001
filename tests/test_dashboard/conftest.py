"""Fixtures for the dashboard tests: the dashboard routes on a real aiohttp server over loopback,
reading a real (per-test, migrated) PostgreSQL database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from infra.settings import Settings, load_settings
from tests.test_dashboard.sample_stream import write_sample


def dashboard_app(settings: Settings, database_url: str | None) -> Any:
    """A faust app that is never started, with the dashboard registered on its aiohttp application
    (exactly what `create_app` does on a worker)."""
    import faust

    from stream_agents.dashboard import register_dashboard

    app = faust.App(f"dash-test-{id(settings)}", broker="kafka://127.0.0.1:9", autodiscover=False,
                    web_host=settings.web_host, web_port=settings.web_port)
    register_dashboard(app, settings, database_url)
    return app


@asynccontextmanager
async def serve(settings: Settings, database_url: str | None, extra_routes: dict[str, Any] | None = None
                ) -> AsyncIterator[TestClient]:
    app = dashboard_app(settings, database_url)
    for path, handler in (extra_routes or {}).items():
        app.web.web_app.router.add_get(path, handler)
    client = TestClient(TestServer(app.web.web_app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def dashboard_settings(tmp_path: Any) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        return load_settings(state_dir=tmp_path / "state", **overrides)

    return make


@pytest.fixture
async def stream_data(pool: asyncpg.Pool) -> asyncpg.Pool:
    """The sample stream (and an old, ended one) in this test's database."""
    await write_sample(pool)
    return pool
