"""spawn_worker: a launched worker loads exactly its parent's Settings, nothing inherited besides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from infra.settings import load_settings
from infra.workers import spawn_worker, worker_environment

ECHO = "tests.test_infra.settings_echo_worker"


def _plain(settings: object) -> dict[str, object]:
    return {name: (value.get_secret_value() if isinstance(value, SecretStr) else value)
            for name, value in settings}  # type: ignore[attr-defined]


def test_the_child_loads_the_parents_settings_and_nothing_inherited(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    # What the parent's environment holds must not leak: the settings were resolved from it already.
    monkeypatch.setenv("DONORCAST_DATABASE_URL", "postgresql://inherited@db/x")
    monkeypatch.setenv("DONORCAST_SEQUENCE_LENGTH", "3")
    config = tmp_path / "donorcast.toml"
    config.write_text("topic_partitions = 9\n")
    monkeypatch.setenv("DONORCAST_CONFIG", str(config))
    monkeypatch.chdir(tmp_path)
    settings = load_settings(env={}, state_dir="relative-state", kafka_bootstrap="127.0.0.1:9", web_port=0,
                             embed_batch_size=7, dashboard_token="sixteen-chars-token!")
    log = tmp_path / "logs" / "echo.log"
    process = spawn_worker(settings, log_path=log, module=ECHO, loglevel="warn", extra_env={"ECHO_KNOB": "on"})
    assert process.wait(timeout=60) == 0, log.read_text()
    echoed = json.loads(log.read_text().strip().splitlines()[-1])
    expected = _plain(settings.model_copy(update={"state_dir": (tmp_path / "relative-state").resolve()}))
    assert echoed["settings"] == json.loads(json.dumps(expected, default=str))
    assert echoed["settings"]["database_url"] is None  # unset here, so not the inherited one
    assert echoed["argv"] == ["worker", "--loglevel", "warn"] and echoed["knob"] == "on"


def test_extra_env_cannot_carry_a_setting() -> None:
    with pytest.raises(ValueError, match="DONORCAST_EMBED_BATCH_SIZE.*put them in the Settings"):
        worker_environment(load_settings(env={}), {"DONORCAST_EMBED_BATCH_SIZE": "9"})
