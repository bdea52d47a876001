"""The import drawing is one-way: infra <- models <- producers / stream_agents / training <- CLI layer.

Every import statement counts, at module level or inside a function (the project imports heavy
dependencies lazily, and a lazy import is a dependency all the same); relative imports are resolved.
Producers and stream agents meet only through Kafka topics, so neither imports the other, and the
stream agents import neither training nor the dashboard.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# package -> the project packages it may import (itself always). The CLI layer (cli/, bench/) may
# import everything, and nothing else may import it. training reads chat files with producers' readers.
MAY_IMPORT: dict[str, set[str]] = {
    "infra": set(),
    "models": {"infra"},
    "producers": {"infra", "models"},
    "stream_agents": {"infra", "models"},
    "training": {"infra", "models", "producers"},
    "dashboard": {"infra", "models", "stream_agents"},  # reads the worker's tables and its scorer
}
TOP_LAYER = {"cli", "bench"}
DASHBOARD = "dashboard"
PROJECT = set(MAY_IMPORT) | TOP_LAYER
# The one import that still points upwards, named so that no other can join it: the worker process
# serves the dashboard in faust's web server, and the faust app is built in stream_agents/app.py.
# Removing it means building the app in the CLI layer and passing the views in (issue 16).
KNOWN_INVERSION = ("stream_agents/app.py", DASHBOARD)


def inverted(found: Import) -> bool:
    return (found.path, found.package) == KNOWN_INVERSION


@dataclass(frozen=True)
class Import:
    path: str  # the importing file, relative to the repository
    line: int
    module: str  # absolute module name imported

    @property
    def package(self) -> str:
        return self.module.split(".")[0]

    def __str__(self) -> str:
        return f"{self.path}:{self.line} imports {self.module}"


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path = REPO) -> list[Import]:
    """Every import in the file, with relative ones made absolute."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path, root)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    rel = str(path.relative_to(root))
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(rel, node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from package import submodule` names a module too: record both spellings.
            found.append(Import(rel, node.lineno, module))
            found += [Import(rel, node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def project_imports(package: str) -> list[Import]:
    root = REPO / package
    if not root.is_dir():
        return []
    return [found for path in sorted(root.rglob("*.py")) for found in imports_of(path)
            if found.package in PROJECT and found.package != package]


def own_imports(package: str) -> list[Import]:
    """Imports of `package`'s files of other places inside the same package (for the sub-package rule)."""
    return [found for path in sorted((REPO / package).rglob("*.py")) for found in imports_of(path)
            if found.package == package]


def test_the_checker_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    # The rules below are only as good as this parser: a function-level and a relative import count.
    sample = REPO / "stream_agents" / "app.py"
    modules = {found.module for found in imports_of(sample)}
    assert "infra.tansu_compat" in modules  # imported inside create_app
    relative = tmp_path / "stream_agents" / "recovery" / "gaps.py"
    relative.parent.mkdir(parents=True)
    relative.write_text("def f():\n    from ..pipeline import Runtime\n    from . import broker_reset\n")
    modules = {f.module for f in imports_of(relative, root=tmp_path)}
    assert {"stream_agents.pipeline.Runtime", "stream_agents.recovery.broker_reset"} <= modules


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_each_layer_imports_only_the_layers_below_it(package: str) -> None:
    allowed = MAY_IMPORT[package]
    bad = [str(found) for found in project_imports(package) if found.package not in allowed and not inverted(found)]
    assert not bad, f"{package} may import only {sorted(allowed) or 'no other project package'}:\n" + "\n".join(bad)


def test_stream_agents_import_no_producers_training_or_dashboard() -> None:
    # Spelled out, since it is the rule the layers above exist for.
    forbidden = {"producers", "training", DASHBOARD, *TOP_LAYER}
    bad = [str(found) for found in project_imports("stream_agents") if found.package in forbidden and not inverted(found)]
    assert not bad, "\n".join(bad)


def test_the_embedded_broker_recovery_is_reached_only_through_its_hook() -> None:
    # stream_agents/recovery/ is switched off on a real Kafka cluster: only the app (which decides)
    # and the agents (behind `if rt.recovery`) may know it; its modules are its own business.
    allowed = {"stream_agents/app.py", "stream_agents/agents.py", "stream_agents/pipeline.py"}
    bad = [str(found) for found in own_imports("stream_agents")
           if found.module.startswith("stream_agents.recovery")
           and not found.path.startswith("stream_agents/recovery/") and found.path not in allowed]
    assert not bad, "\n".join(bad)


def test_nothing_below_the_cli_layer_imports_it() -> None:
    bad = [str(found) for package in MAY_IMPORT for found in project_imports(package)
           if found.package in TOP_LAYER]
    assert not bad, "\n".join(bad)


def test_stream_agents_is_a_small_app_without_import_cycles() -> None:
    # One module per concern and few of them (issue 16: at most 10 outside recovery/, the package's
    # __init__ and __main__ entry points aside), each importing only modules before it in some order.
    package = REPO / "stream_agents"
    modules = sorted(p.stem for p in package.glob("*.py") if p.stem not in {"__init__", "__main__"})
    assert len(modules) <= 10, f"stream_agents has {len(modules)} modules outside recovery/: {modules}"
    needs = {name: {f.module.split(".")[1] for f in imports_of(package / f"{name}.py")
                    if f.module.startswith("stream_agents.") and f.module.split(".")[1] in modules} - {name}
             for name in modules}
    ordered: list[str] = []
    while needs:
        ready = sorted(name for name, deps in needs.items() if deps <= set(ordered))
        assert ready, f"import cycle among {sorted(needs)}: {needs}"
        ordered += ready
        for name in ready:
            del needs[name]
