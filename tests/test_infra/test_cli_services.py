"""`donorcast up`, `status`, `down` as a user runs them: real processes, nothing left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from infra.kafka import free_port
from infra.process import ServiceRecord, is_alive
from infra.settings import Settings
from tests.test_stream_agents.harness import REPO_ROOT, start_worker

DONORCAST = str(Path(sys.executable).parent / "donorcast")


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DONORCAST_")}
    return subprocess.run([DONORCAST, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_up_status_down(service_tmp_path: Path) -> None:
    tmp_path = service_tmp_path
    up = run("up", cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    assert "kafka" in up.stdout and "postgres" in up.stdout
    records = [ServiceRecord.load(tmp_path / ".donorcast" / "run" / f"{n}.json") for n in ("kafka", "postgres")]
    assert all(r is not None for r in records)
    try:
        status = run("status", "--json", cwd=tmp_path)
        report = json.loads(status.stdout)
        assert report["kafka"]["state"] == "healthy", report
        assert report["postgres"]["state"] == "healthy", report
        assert run("up", cwd=tmp_path).returncode == 0  # idempotent: reuses the running services
        assert ServiceRecord.load(tmp_path / ".donorcast" / "run" / "kafka.json").pid == records[0].pid  # type: ignore[union-attr]
    finally:
        down = run("down", cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert not is_alive(records[0].pid, "tansu")  # type: ignore[union-attr]
    assert not is_alive(records[1].pid, "postgres")  # type: ignore[union-attr]
    after = json.loads(run("status", "--json", cwd=tmp_path).stdout)
    assert after["kafka"]["state"] == "stopped" and after["postgres"]["state"] == "stopped"


def test_bad_database_url_is_explained(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DONORCAST_")}
    env["DONORCAST_DATABASE_URL"] = "mysql://nope"
    result = subprocess.run([DONORCAST, "status"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert "DONORCAST_DATABASE_URL must start with postgresql://" in result.stderr


def run_module(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m infra.cli ARGS` with only the given DONORCAST_* variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DONORCAST_")}
    return subprocess.run([sys.executable, "-m", "infra.cli", *args], cwd=cwd, text=True, capture_output=True,
                          env={**clean, "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "200", **env}, timeout=120)


def test_settings_errors_are_one_line_naming_the_variable_and_the_allowed_values(tmp_path: Path) -> None:
    cases = {
        ("DONORCAST_TOPIC_PARTITIONS", "abc"): "DONORCAST_TOPIC_PARTITIONS='abc' is invalid: it must be an integer "
                                               "from 1 to 256",
        ("DONORCAST_WEB_PORT", "99999"): "DONORCAST_WEB_PORT='99999' is invalid: it must be an integer from 0 to 65535",
        ("DONORCAST_EMBED_BATCH_WAIT", "-1"): "DONORCAST_EMBED_BATCH_WAIT='-1' is invalid: it must be a number > 0 "
                                              "and <= 5",
        ("DONORCAST_DATABASE_URL", "mysql://u:secret@h/db"): "DONORCAST_DATABASE_URL must start with postgresql:// "
                                                             "(got 'mysql':...)",
    }
    for (variable, value), expected in cases.items():
        result = run_module("status", cwd=tmp_path, **{variable: value})
        assert result.returncode == 2, result.stderr
        assert result.stderr == f"invalid settings: {expected}\n"
        assert "secret" not in result.stderr

    (tmp_path / "donorcast.toml").write_text('web_port = 70000\nsequence_lenght = 32\n', encoding="utf-8")
    result = run_module("status", cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("invalid settings: web_port = 70000 in donorcast.toml is invalid: it must be an "
                                    "integer from 0 to 65535; sequence_lenght = 32 in donorcast.toml is not a "
                                    "setting (settings: state_dir, ")
    assert "sequence_length" in result.stderr and "pydantic" not in result.stderr

    (tmp_path / "donorcast.toml").write_text("web_port = \n", encoding="utf-8")
    broken = run_module("status", cwd=tmp_path)
    assert broken.returncode == 2
    assert broken.stderr == "invalid settings: donorcast.toml is not valid TOML: Invalid value (at line 1, column 12)\n"


def test_status_reports_only_the_workers_of_its_own_state_dir(settings: Settings, tmp_path: Path) -> None:
    """A worker of state dir A answers on the configured web port; `status` for an empty state dir B must
    not call it healthy (it used to probe the port), and `status` for A shows it in a readable table."""
    port = free_port()
    worker = start_worker(settings, port, tmp_path / "worker.log", model_double=False)
    try:
        summary = worker.wait_until(lambda s: s["health"]["status"] == "starting", 120, "the worker to serve HTTP")
        assert summary["model_version"] is None  # no model promoted in A: it waits for one
        services = {"DONORCAST_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
                    "DONORCAST_DATABASE_URL": settings.database_url or "", "DONORCAST_WEB_PORT": str(port)}
        other = run_module("--state-dir", str(tmp_path / "empty"), "status", "--json", cwd=tmp_path, **services)
        report = json.loads(other.stdout)
        assert report["worker"]["state"] == "stopped", report
        assert report["worker"]["detail"].startswith(f"no worker of {tmp_path / 'empty'} running")
        assert report["kafka"]["state"] == report["postgres"]["state"] == "healthy"

        mine = run_module("--state-dir", str(settings.state_dir), "status", cwd=tmp_path, **services)
        assert mine.returncode == 0, mine.stdout + mine.stderr
        (row,) = [line for line in mine.stdout.splitlines() if line.startswith("│ worker")]
        cells = [cell.strip() for cell in row.split("│")[1:-1]]
        assert cells[:3] == ["worker", "starting", f"http://127.0.0.1:{port}"]
        assert cells[3].startswith(f"pid {worker.process.pid} · model none yet · up ")
        assert f"donorcast status of {settings.state_dir.resolve()}" in mine.stdout
        assert "{" not in mine.stdout and "…" not in mine.stdout  # no raw JSON, nothing cut off
    finally:
        worker.stop()


def test_only_a_worker_command_line_counts_as_a_worker() -> None:
    from infra.health import _is_worker

    assert _is_worker(b"python -m stream_agents worker --loglevel info".split())
    assert _is_worker(b"faust -A stream_agents.app worker -l info".split())
    assert not _is_worker(b"python -m pytest tests/test_stream_agents -k worker".split())
    assert not _is_worker(b"donorcast worker --workers 2".split())  # the supervisor: its children are the workers
