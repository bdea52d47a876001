"""Refusals that happen before anything starts: a public bind without a token, an unreadable file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.test_dashboard.test_demo import donorcast_command
from tests.test_stream_agents.harness import REPO_ROOT


def run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DONORCAST_")}
    return subprocess.run(args, cwd=tmp_path, env={**clean, "DONORCAST_STATE_DIR": str(tmp_path / "state"), **env},
                          capture_output=True, text=True, timeout=120, check=False)


def test_demo_refuses_a_public_bind_without_a_token(tmp_path: Path) -> None:
    result = run([*donorcast_command(), "demo"], tmp_path, DONORCAST_WEB_HOST="0.0.0.0")
    assert result.returncode == 1
    assert "not a loopback address" in result.stderr and "DONORCAST_DASHBOARD_TOKEN" in result.stderr
    assert not (tmp_path / "state" / "run").exists()  # refused before any service started


def test_demo_rejects_a_file_without_chat(tmp_path: Path) -> None:
    junk = tmp_path / "chat.json"
    junk.write_text("this is not chat\n")
    result = run([*donorcast_command(), "demo", "--file", str(junk)], tmp_path)
    assert result.returncode != 0
    assert "chat.json" in result.stderr
    assert not (tmp_path / "state" / "run").exists()


def test_worker_refuses_a_public_bind_without_a_token(tmp_path: Path, kafka_bootstrap: str) -> None:
    result = run([sys.executable, "-m", "stream_agents", "worker"], tmp_path, DONORCAST_WEB_HOST="0.0.0.0",
                 DONORCAST_KAFKA_BOOTSTRAP=kafka_bootstrap, PYTHONPATH=str(REPO_ROOT))
    assert result.returncode == 1
    assert "refusing to serve the dashboard on '0.0.0.0'" in result.stderr
