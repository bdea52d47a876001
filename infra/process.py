"""Pid records for the processes we start, so that `down`, `status` and the next start find them.

A record is only trusted while its pid is alive *and* runs the expected program: a pid reused by
an unrelated process after a reboot or crash is never signalled.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class ServiceRecord:
    name: str
    pid: int
    url: str
    detached: bool = False
    started_at: float = field(default_factory=time.time)
    extra: dict[str, str] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> ServiceRecord | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True


def is_alive(pid: int, expect_in_cmdline: str) -> bool:
    return pid > 0 and not _is_zombie(pid) and expect_in_cmdline in _cmdline(pid)


def stop_pid(pid: int, expect_in_cmdline: str, timeout: float = 10.0) -> bool:
    """SIGTERM, wait, then SIGKILL. True if a matching process was running."""
    if not is_alive(pid, expect_in_cmdline):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(pid, expect_in_cmdline):
            _reap(pid)
            return True
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _reap(pid)
    return True


def _reap(pid: int) -> None:
    # Our own children stay zombies until waited for.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
