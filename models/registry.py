"""Versioned model registry: one folder per model version under `settings.registry_dir`.

Layout::

    <root>/
      v20261128-093000-ab12/        a committed version (has manifest.json)
        manifest.json
        encoder/ encoder.onnx encoder.int8.onnx classifier.pt classifier.onnx ...
      v20261128-101500-cd34/        still staging: no manifest.json yet, so list/get ignore it
      PROMOTED                      the promoted version's name (replaced atomically)
      promotions.jsonl              history: one {"version", "promoted_at", "previous"} line per promotion

Life cycle: `create_version()` makes an empty staging folder; the job writes its files there; then
`commit(version, manifest)` writes manifest.json atomically (temp file + rename), and only from that
moment the version exists for `list_versions`/`get`/`promote`. A crashed job leaves a staging folder
that nobody loads.

Manifest conventions (JSON object; every key optional unless a reader needs it):
- "files": {key: path relative to the version folder}. Keys used:
  "encoder_dir" (HF checkpoint dir with tokenizer), "encoder_onnx" (fp32), "encoder_onnx_int8",
  "static_encoder" (the distilled model2vec table of the fast tier), "classifier_pt", "classifier_onnx".
  Resolve with `ModelVersion.file(key)`.
- "runtime_encoder": the encoder file key the classifier was trained on and the scorer loads
  ("encoder_onnx_int8" when absent); `ModelVersion.encoder_tier` names it "bert" or "static".
- "classifier_config", "feature_config": dicts the classifier side needs to rebuild its model/inputs.
- "label": "paid" | "member" | "conversion".
- "metrics": {name: number or nested dict}; `donorcast models list` shows roc_auc/pr_auc if present.
- "data_fingerprint": hash (or dict) of the training data, "threshold": float chosen on validation,
  "base_model": where the encoder came from, "notes": free text.
- "created_at" is added by `commit` (ISO-8601 UTC) if the manifest does not carry one.

Hot swap: the stream agents poll `promoted_signature()` (pointer content + mtime, two stat/read
calls) and reload when it changes, so a promotion needs no restart.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from infra.errors import InputError, ModelNotFound

MANIFEST = "manifest.json"
POINTER = "PROMOTED"
HISTORY = "promotions.jsonl"


@dataclass(frozen=True)
class ModelVersion:
    version: str
    path: Path
    created_at: datetime
    manifest: dict[str, Any]
    promoted: bool

    def file(self, key: str) -> Path:
        """Absolute path of manifest["files"][key]; ModelNotFound if this version has no such file."""
        relative = self.manifest.get("files", {}).get(key)
        if relative is None:
            raise ModelNotFound(
                f"model {self.version} has no {key!r} file (it has: {', '.join(self.manifest.get('files', {})) or 'none'})"
            )
        return self.path / relative

    def has_file(self, key: str) -> bool:
        return key in self.manifest.get("files", {})

    @property
    def runtime_encoder(self) -> str:
        """The encoder file the classifier was trained on and the scorer loads (int8 BERT by default)."""
        return str(self.manifest.get("runtime_encoder", "encoder_onnx_int8"))

    @property
    def encoder_tier(self) -> str:
        """"static" (the distilled model2vec table) or "bert" (the ONNX message encoder)."""
        return "static" if self.runtime_encoder == "static_encoder" else "bert"


def _write_atomic(path: Path, text: str) -> None:
    """Write to a temp file in the same folder, fsync, rename: readers see the old or the new file."""
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


class ModelRegistry:
    """The registry rooted at one folder (pass `settings.registry_dir`)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # ------------------------------------------------------------ writing

    def create_version(self, prefix: str = "v") -> tuple[str, Path]:
        """A new, empty staging folder with a unique, time-sortable name."""
        self.root.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        while True:
            version = f"{prefix}{stamp}-{secrets.token_hex(2)}"
            path = self.root / version
            try:
                path.mkdir()
            except FileExistsError:
                continue
            return version, path

    def commit(self, version: str, manifest: dict[str, Any]) -> ModelVersion:
        """Publish a staging version by writing its manifest. Every listed file must exist."""
        path = self._folder(version)
        if not path.is_dir():
            raise ModelNotFound(f"no staging folder for {version!r} under {self.root}; call create_version first")
        manifest = dict(manifest)
        for key, relative in manifest.get("files", {}).items():
            if Path(relative).is_absolute() or not (path / relative).exists():
                raise InputError(f"manifest file {key}={relative!r} must be a path inside {path} that exists")
        manifest.setdefault("created_at", datetime.now(UTC).isoformat())
        manifest["version"] = version
        _write_atomic(path / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True, default=str))
        return self.get(version)

    def promote(self, version: str) -> None:
        """Make `version` the one the live agents load (atomic pointer swap + history line)."""
        self.get(version)  # raises ModelNotFound for unknown or uncommitted versions
        previous = self._promoted_name()
        _write_atomic(self.root / POINTER, version + "\n")
        record = {"version": version, "previous": previous, "promoted_at": datetime.now(UTC).isoformat()}
        with (self.root / HISTORY).open("a", encoding="utf-8") as history:
            history.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------ reading

    def list_versions(self) -> list[ModelVersion]:
        """Committed versions, oldest first."""
        if not self.root.is_dir():
            return []
        promoted = self._promoted_name()
        found = [
            self._read(folder, promoted)
            for folder in self.root.iterdir()
            if folder.is_dir() and (folder / MANIFEST).is_file()
        ]
        return sorted(found, key=lambda v: (v.created_at, v.version))

    def get(self, version: str) -> ModelVersion:
        folder = self._folder(version)
        if not (folder / MANIFEST).is_file():
            available = ", ".join(v.version for v in self.list_versions()) or "none"
            raise ModelNotFound(f"no committed model version {version!r} in {self.root} (available: {available})")
        return self._read(folder, self._promoted_name())

    def promoted(self) -> ModelVersion | None:
        name = self._promoted_name()
        if name is None or not (self._folder(name) / MANIFEST).is_file():
            return None
        return self.get(name)

    def promoted_signature(self) -> str | None:
        """Changes whenever a promotion happens; cheap enough to poll every few seconds."""
        pointer = self.root / POINTER
        try:
            stat = pointer.stat()
            return f"{pointer.read_text(encoding='utf-8').strip()}@{stat.st_mtime_ns}"
        except FileNotFoundError:
            return None

    def history(self) -> list[dict[str, Any]]:
        """Every promotion so far, oldest first."""
        path = self.root / HISTORY
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    # ------------------------------------------------------------ helpers

    def _folder(self, version: str) -> Path:
        if not version or "/" in version or "\\" in version or version.startswith("."):
            raise InputError(f"invalid model version name {version!r}")
        return self.root / version

    def _promoted_name(self) -> str | None:
        try:
            return (self.root / POINTER).read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None

    @staticmethod
    def _read(folder: Path, promoted: str | None) -> ModelVersion:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        created = datetime.fromisoformat(manifest.get("created_at", "1970-01-01T00:00:00+00:00"))
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        return ModelVersion(
            version=folder.name, path=folder, created_at=created, manifest=manifest, promoted=folder.name == promoted
        )
