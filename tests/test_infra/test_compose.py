"""docker-compose.yml cannot run here (no Docker engine); keep it consistent with the code."""

from __future__ import annotations

from pathlib import Path

import yaml

from infra.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def test_compose_names_the_services_and_valid_settings() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "postgres", "worker", "dashboard"} <= set(services)
    kafka_env = services["kafka"]["environment"]
    assert "controller" in kafka_env["KAFKA_PROCESS_ROLES"]  # KRaft: no ZooKeeper service
    assert not any("zookeeper" in name for name in services)
    for name in ("worker", "dashboard"):
        env = services[name]["environment"]
        assert env["DONORCAST_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert env["DONORCAST_DATABASE_URL"].startswith("postgresql://")
        assert env["DONORCAST_DASHBOARD_TOKEN"], "non-loopback bind needs a token"
        known = {f"DONORCAST_{field.upper()}" for field in Settings.model_fields}
        unknown = {key for key in env if key.startswith("DONORCAST_")} - known
        assert not unknown, f"{name} sets unknown settings {unknown}"


def test_dockerfile_pins_torch_and_copies_every_package() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "torch==2.13.0" in dockerfile
    for package in ("infra", "producers", "stream_agents", "dashboard", "training", "models"):
        assert f"COPY {package} {package}" in dockerfile
