"""Worker processes: the one way one is started (`spawn_worker`), and how a group of them is stopped.

Every launcher (the demo, `donorcast worker --workers N`, the bench, the tests) starts a worker here,
so each one runs with exactly its parent's Settings: `Settings.to_env()` in place of every inherited
DONORCAST_* variable, and (in a source checkout) the parent's code first on the import path. The worker itself is named by
module (`python -m stream_agents worker`), so infra imports nothing of it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from infra.settings import CONFIG_FILE_ENV, ENV_PREFIX, Settings

WORKER_MODULE = "stream_agents"
STOP_TIMEOUT = 20.0
# The directory holding infra/ (and stream_agents/ beside it).
CODE_ROOT = Path(__file__).resolve().parents[1]
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child before exec: the kernel stops the worker if its parent dies, even by kill -9."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def setting_variables() -> set[str]:
    """The variables Settings reads: DONORCAST_<FIELD> for each field, and the config file's name."""
    return {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields} | {CONFIG_FILE_ENV}


def worker_environment(settings: Settings, extra_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without the settings variables it holds, plus `settings.to_env()`.

    An inherited DONORCAST_DATABASE_URL must not reach a worker whose settings have none. Paths are
    made absolute: the child may run in another directory. `extra_env` is for what is not a setting
    (a test double's knobs, faust's); a setting in it is refused, since it would bypass the parent's
    Settings and their validation.
    """
    variables = setting_variables()
    smuggled = sorted(set(extra_env or {}) & variables)
    if smuggled:
        raise ValueError(f"extra_env may not carry settings ({', '.join(smuggled)}): put them in the Settings")
    resolved = settings.model_copy(update={
        "state_dir": settings.state_dir.resolve(),
        "base_model": settings.base_model.resolve() if settings.base_model else None,
    })
    env = {key: value for key, value in os.environ.items() if key not in variables}
    env.update(resolved.to_env())
    if (CODE_ROOT / "pyproject.toml").is_file():
        # A source checkout: the child imports this code, not another install. (Installed, CODE_ROOT
        # is site-packages, which must not move ahead of the standard library.)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(CODE_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env.update(extra_env or {})
    return env


def spawn_worker(
    settings: Settings,
    *,
    log_path: Path | None = None,
    module: str = WORKER_MODULE,
    loglevel: str = "info",
    extra_env: Mapping[str, str] | None = None,
    die_with_parent_process: bool = True,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """`python -m MODULE worker` on these settings (its web server on settings.web_port).

    `module` is another worker app for test doubles and bench variants; `log_path` collects stdout and
    stderr (else they are this process's); `new_session` keeps Ctrl-C of a terminal from reaching the
    worker, for a parent that stops it in order itself.
    """
    env = worker_environment(settings, extra_env)
    log = None
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")  # noqa: SIM115 - the child holds it from here on
    try:
        return subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", module, "worker", "--loglevel", loglevel],
            env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT if log is not None else None,
            start_new_session=new_session,
            preexec_fn=die_with_parent if die_with_parent_process else None,
        )
    finally:
        if log is not None:
            log.close()


def stop_workers(processes: Sequence[subprocess.Popen[bytes]], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM to each, then wait for all of them together; SIGKILL what is still running at the deadline."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
