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


def test_web_host_accepts_bracketed_ipv6_and_public_url_is_checked() -> None:
    assert load_settings(web_host="[::1]").web_host == "::1"
    assert load_settings(web_host=" 127.0.0.1 ").web_host == "127.0.0.1"
    assert load_settings(public_url="https://dash.example.org/").public_url == "https://dash.example.org"
    assert load_settings(public_url="").public_url is None
    for bad in ("dash.example.org", "ftp://dash.example.org", "https://", "https://dash.example.org:99999"):
        with pytest.raises(ValueError, match="DONORCAST_PUBLIC_URL must be http"):
            load_settings(public_url=bad)


def test_public_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DONORCAST_PUBLIC_URL", "https://dash.example.org:8443")
    assert load_settings().public_url == "https://dash.example.org:8443"
