"""Registry life cycle on a real folder: staging, commit, list, get errors, promote, hot-swap signature."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infra.errors import InputError, ModelNotFound
from models.registry import ModelRegistry


def _commit(registry: ModelRegistry, **manifest: object) -> str:
    version, path = registry.create_version()
    (path / "classifier.pt").write_bytes(b"weights")
    registry.commit(version, {"files": {"classifier_pt": "classifier.pt"}, **manifest})
    return version


def test_staging_versions_are_invisible_until_committed(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    version, path = registry.create_version()
    assert path.is_dir() and path.parent == registry.root
    assert registry.list_versions() == []
    with pytest.raises(ModelNotFound, match="available: none"):
        registry.get(version)

    committed = registry.commit(version, {"label": "member", "metrics": {"pr_auc": 0.5}})
    assert committed.version == version and not committed.promoted
    assert json.loads((path / "manifest.json").read_text())["label"] == "member"
    assert [v.version for v in registry.list_versions()] == [version]


def test_versions_are_unique_and_listed_oldest_first(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    names = [_commit(registry, notes=str(i)) for i in range(3)]
    assert len(set(names)) == 3
    assert [v.manifest["notes"] for v in registry.list_versions()] == ["0", "1", "2"]


def test_get_unknown_version_names_the_available_ones(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    version = _commit(registry)
    with pytest.raises(ModelNotFound, match=version):
        registry.get("v-nope")
    with pytest.raises(InputError):
        registry.get("../etc")


def test_commit_rejects_missing_files(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    version, _ = registry.create_version()
    with pytest.raises(InputError, match="encoder.onnx"):
        registry.commit(version, {"files": {"encoder_onnx": "encoder.onnx"}})
    with pytest.raises(ModelNotFound):
        registry.get(version)


def test_file_resolves_relative_to_the_version(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    model = registry.get(_commit(registry))
    assert model.file("classifier_pt").read_bytes() == b"weights"
    assert model.has_file("classifier_pt") and not model.has_file("encoder_onnx")
    with pytest.raises(ModelNotFound, match="encoder_onnx"):
        model.file("encoder_onnx")


def test_promote_moves_the_pointer_records_history_and_changes_signature(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    first, second = _commit(registry), _commit(registry)
    assert registry.promoted() is None and registry.promoted_signature() is None

    registry.promote(first)
    signature = registry.promoted_signature()
    assert registry.promoted().version == first  # type: ignore[union-attr]
    assert registry.promoted_signature() == signature  # stable while nothing changes

    registry.promote(second)
    assert registry.promoted_signature() != signature
    assert [v.promoted for v in registry.list_versions()] == [False, True]
    assert [(h["version"], h["previous"]) for h in registry.history()] == [(first, None), (second, first)]

    with pytest.raises(ModelNotFound):
        registry.promote("v-missing")
    assert registry.promoted().version == second  # type: ignore[union-attr]


def test_models_cli_lists_and_promotes(tmp_path: Path) -> None:
    from infra.cli import build_app

    registry = ModelRegistry(tmp_path / "models")
    version = _commit(registry, label="member", metrics={"test": {"pr_auc": 0.4321}})
    runner = CliRunner()
    state = ["--state-dir", str(tmp_path)]

    result = runner.invoke(build_app(), [*state, "models", "promote", version])
    assert result.exit_code == 0, result.output
    result = runner.invoke(build_app(), [*state, "models", "list"])
    assert result.exit_code == 0, result.output
    assert version in result.output and "pr_auc=0.432" in result.output and "*" in result.output

    result = runner.invoke(build_app(), [*state, "models", "promote", "v-missing"])
    assert isinstance(result.exception, ModelNotFound)
