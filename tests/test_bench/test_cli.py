"""`donorcast bench` is wired, and `python -m bench.<name>` runs the same commands."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from bench.machine import REPO_ROOT


def test_bench_group_lists_its_commands() -> None:
    from infra.cli import build_app

    result = CliRunner().invoke(build_app(), ["bench", "--help"])
    assert result.exit_code == 0, result.output
    for command in ("encoder", "pipeline", "training", "all", "readme"):
        assert command in result.output


def test_module_entry_point_runs_the_command() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.encoder", "--help"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "--messages" in done.stdout and "--threads" in done.stdout
