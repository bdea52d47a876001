"""Session-wide real services: one embedded Tansu broker and one embedded PostgreSQL server.

Tests get isolation from factories, not from mocks: `topic_prefix` gives each test its own
topics, `database_url_factory` its own database (migrated). Nothing here fakes a broker.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from infra.kafka import EmbeddedKafka, ensure_topics  # noqa: E402
from infra.postgres import EmbeddedPostgres, create_pool  # noqa: E402
from infra.repository import migrate  # noqa: E402
from infra.settings import Settings, load_settings  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def traversable_tmpdir(prefix: str) -> Path:
    """A temp dir outside pytest's own: pytest keeps its base dir at mode 0700 (re-applied by every
    pytest run on the machine), which the unprivileged user the embedded PostgreSQL runs as (when
    we are root) cannot traverse. Short, too: the Unix socket path must stay under 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def services_dir() -> Iterator[Path]:
    path = traversable_tmpdir("dc-svc-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def service_tmp_path() -> Iterator[Path]:
    """Per-test dir for tests that start their own embedded PostgreSQL."""
    path = traversable_tmpdir("dc-t-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_bootstrap(services_dir: Path) -> Iterator[str]:
    broker = EmbeddedKafka(load_settings(state_dir=services_dir))
    record = broker.start()
    yield record.url
    broker.stop()


@pytest.fixture(scope="session")
def postgres_admin_url(services_dir: Path) -> Iterator[str]:
    server = EmbeddedPostgres(load_settings(state_dir=services_dir))
    record = server.start()
    yield record.url.replace("/donorcast?", "/postgres?")
    server.stop()


@pytest.fixture(scope="session")
def database_url_factory(postgres_admin_url: str) -> Callable[[], str]:
    """Each call: a new, migrated database; returns its URL."""

    def make() -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"

        async def create() -> None:
            conn = await asyncpg.connect(postgres_admin_url)
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()
            pool = await create_pool(url)
            try:
                await migrate(pool)
            finally:
                await pool.close()

        url = postgres_admin_url.replace("/postgres?", f"/{name}?")
        asyncio.run(create())
        return url

    return make


@pytest.fixture
def database_url(database_url_factory: Callable[[], str]) -> str:
    return database_url_factory()


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url)
    yield pool
    await pool.close()


@pytest.fixture
def topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}-"


@pytest.fixture
def settings(tmp_path: Path, kafka_bootstrap: str, database_url: str, topic_prefix: str) -> Settings:
    """Settings pointing at the session's real services, with this test's own topics and database."""
    return load_settings(
        state_dir=tmp_path / "state",
        kafka_bootstrap=kafka_bootstrap,
        database_url=database_url,
        topic_prefix=topic_prefix,
        topic_partitions=4,
    )


@pytest.fixture
async def topics(settings: Settings) -> Settings:
    assert settings.kafka_bootstrap is not None
    await ensure_topics(settings.kafka_bootstrap, settings)
    return settings


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is not present (real data lives beside the repo)")
    return SHARED_DATA
