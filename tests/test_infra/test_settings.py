from __future__ import annotations

from pathlib import Path

import pytest

from infra.settings import load_settings


def test_environment_and_toml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "donorcast.toml"
    config.write_text('topic_partitions = 8\nsequence_length = 32\nkafka_bootstrap = "broker:9092"\n')
    monkeypatch.setenv("DONORCAST_CONFIG", str(config))
    monkeypatch.setenv("DONORCAST_SEQUENCE_LENGTH", "16")  # env beats the file
    settings = load_settings()
    assert settings.topic_partitions == 8
    assert settings.sequence_length == 16
    assert settings.kafka_bootstrap == "broker:9092"
    assert not settings.uses_embedded_kafka and settings.uses_embedded_postgres


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValueError):
        settings.topic_partitions = 3  # type: ignore[misc]


def test_bad_urls_are_explained() -> None:
    with pytest.raises(ValueError, match="DONORCAST_DATABASE_URL must start with postgresql://"):
        load_settings(database_url="mysql://x")
    with pytest.raises(ValueError, match="DONORCAST_KAFKA_BOOTSTRAP must be host:port"):
        load_settings(kafka_bootstrap="just-a-host")


def test_secrets_do_not_print(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DONORCAST_YOUTUBE_API_KEY", "AIzaSECRET123")
    settings = load_settings()
    assert "AIzaSECRET123" not in repr(settings) and "AIzaSECRET123" not in str(settings)
    assert settings.youtube_api_key is not None
    assert settings.youtube_api_key.get_secret_value() == "AIzaSECRET123"
