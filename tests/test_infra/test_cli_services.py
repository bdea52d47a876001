"""`donorcast up`, `status`, `down` as a user runs them: real processes, nothing left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from infra.process import ServiceRecord, is_alive

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
