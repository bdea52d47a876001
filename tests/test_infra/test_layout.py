"""The package layout is the architecture: these tests keep its import rules true."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import bench
import infra
import models
import producers
import stream_agents
import training

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("producers", "stream_agents", "training", "models", "infra", "bench")


def test_packages_resolve_inside_the_repo() -> None:
    # Generic names like `models` must never be shadowed by some other installed module.
    for module in (infra, producers, stream_agents, training, models, bench):
        assert Path(module.__file__).resolve().is_relative_to(REPO), module.__file__


def _imported_top_levels(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (REPO / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(REPO))] = names
    return found


def test_infra_imports_no_other_package_except_the_cli_root() -> None:
    others = {"producers", "stream_agents", "training", "models", "bench"}
    for path, names in _imported_top_levels("infra").items():
        assert not (names & others), f"{path} imports {names & others}"


def test_models_have_no_kafka_or_database_code() -> None:
    forbidden = {"aiokafka", "faust", "asyncpg", "producers", "stream_agents", "training"}
    for path, names in _imported_top_levels("models").items():
        assert not (names & forbidden), f"{path} imports {names & forbidden}"


def test_importing_infra_cli_loads_no_other_package() -> None:
    code = (
        "import sys, infra.cli; "
        "bad = [m for m in ('producers','stream_agents','training','models','torch','faust') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "donorcast"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for command in ("up", "down", "status", "db"):
        assert command in result.stdout
