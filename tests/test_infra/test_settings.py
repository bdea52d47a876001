from __future__ import annotations

from pathlib import Path

import pytest

from infra.settings import Settings, load_settings


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


# Every field set to a value other than its default, so the round trip below can only pass if each
# one reaches the child. A new Settings field must be added here (the first assertion says so).
EVERY_FIELD_SET = {
    "state_dir": "/srv/donorcast state", "kafka_bootstrap": "broker-a:9092,broker-b:9093",
    "database_url": "postgresql://u:p@db:5433/donorcast", "topic_partitions": 7, "topic_prefix": "t-1.",
    "base_model": "/models/minilm", "sequence_length": 17, "viewer_idle_seconds": 90.5,
    "embed_batch_size": 5, "embed_batch_wait": 0.125, "worker_threads": 3, "web_host": "::1",
    "web_port": 0, "dashboard_token": "a-token-of-twenty-chars", "public_url": "https://dash.example.org:8443",
    "youtube_api_key": "AIzaKEY", "display_currency": "EUR",
}


def test_to_env_round_trips_every_field(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert set(EVERY_FIELD_SET) == set(Settings.model_fields), "add the new field to EVERY_FIELD_SET"
    settings = load_settings(**EVERY_FIELD_SET)
    for name, field in Settings.model_fields.items():
        assert getattr(settings, name) != field.default, name
    # The child must see these settings and nothing of this process's environment or config file.
    config = tmp_path / "donorcast.toml"
    config.write_text("topic_partitions = 9\nembed_batch_size = 64\n")
    monkeypatch.setenv("DONORCAST_CONFIG", str(config))
    monkeypatch.setenv("DONORCAST_SEQUENCE_LENGTH", "3")
    env = settings.to_env()
    assert all(isinstance(value, str) for value in env.values())
    assert env["DONORCAST_DASHBOARD_TOKEN"] == "a-token-of-twenty-chars"  # a worker needs the secret itself
    assert load_settings(env=env) == settings
    assert load_settings(env=env).dashboard_token.get_secret_value() == "a-token-of-twenty-chars"


def test_to_env_round_trips_defaults_and_leaves_unset_fields_unset(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    monkeypatch.delenv("DONORCAST_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no donorcast.toml here
    defaults = load_settings(env={})
    env = defaults.to_env()
    assert "DONORCAST_KAFKA_BOOTSTRAP" not in env and "DONORCAST_DATABASE_URL" not in env
    monkeypatch.setenv("DONORCAST_KAFKA_BOOTSTRAP", "inherited:9092")  # not part of `env`: ignored
    assert load_settings(env=env) == defaults
    assert load_settings(env=env).uses_embedded_kafka
    # An explicit override still beats the variables, as for the process environment.
    assert load_settings(env=env, topic_partitions=2).topic_partitions == 2
