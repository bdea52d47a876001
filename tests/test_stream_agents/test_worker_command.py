"""`donorcast worker --workers N`: N worker processes on consecutive web ports, stopped together."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from infra.kafka import free_port
from infra.process import is_alive
from infra.settings import Settings

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[2]


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(") ", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    return found


def free_port_pair() -> int:
    """A port p with p + 1 free as well: the command gives worker i settings.web_port + i. (A free port
    alone was not enough: with other tests running, p + 1 was sometimes taken.)"""
    for _ in range(100):
        port = free_port_pair()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two adjacent free ports")


def health(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:  # noqa: S310
            return json.loads(response.read())
    except OSError:
        return None


def test_two_workers_start_answer_and_stop_on_sigterm(topics: Settings, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, **topics.model_copy(update={"web_port": port}).to_env(), "PYTHONPATH": str(REPO_ROOT)}
    log = tmp_path / "worker-command.log"
    with open(log, "wb") as out:
        command = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "infra.cli", "--state-dir", str(tmp_path / "state"), "worker", "--workers", "2"],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        # Keep the answers that ended the wait: asking again on a loaded machine could time out.
        answers: dict[int, dict] = {}
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and len(answers) < 2:
            assert command.poll() is None, log.read_text()
            for p in (port, port + 1):
                if p not in answers and (answer := health(p)) is not None:
                    answers[p] = answer
            time.sleep(0.5)
        assert len(answers) == 2, f"workers on {sorted(set((port, port + 1)) - set(answers))} never answered:\n{log.read_text()}"
        # No model is promoted in this state dir: both serve HTTP and say they are waiting for one.
        assert answers[port]["status"] == answers[port + 1]["status"] == "starting", log.read_text()
        workers = children_of(command.pid)
        assert len(workers) == 2
        printed = log.read_text()
        assert f"http://127.0.0.1:{port}/healthz" in printed and f"http://127.0.0.1:{port + 1}/healthz" in printed
        assert "none promoted" in printed
    finally:
        command.send_signal(signal.SIGTERM)
        command.wait(timeout=60)
    assert command.returncode == 0, log.read_text()
    assert not any(is_alive(pid, "stream_agents") for pid in workers)
