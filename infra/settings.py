"""The one settings object: `DONORCAST_*` environment variables, then an optional TOML file, then defaults.

Unset `kafka_bootstrap` / `database_url` mean "use the embedded Tansu broker / embedded PostgreSQL",
started by `infra.services` with their state under `state_dir`. Settings are frozen and passed
explicitly; nothing reads the environment anywhere else.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_FILE_ENV = "DONORCAST_CONFIG"
DEFAULT_CONFIG_FILE = "donorcast.toml"
ENV_PREFIX = "DONORCAST_"

# The environment `load_settings(env=...)` reads instead of os.environ, for the one call that sets it.
_ENVIRONMENT: ContextVar[Mapping[str, str] | None] = ContextVar("donorcast_settings_environment", default=None)


class _MappingEnvSource(EnvSettingsSource):
    """EnvSettingsSource over a given mapping instead of the process environment."""

    def __init__(self, settings_cls: type[BaseSettings], environment: Mapping[str, str]) -> None:
        self._environment = environment  # before super().__init__, which loads the variables
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {key.lower(): value for key, value in self._environment.items()}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    state_dir: Path = Field(Path(".donorcast"), description="embedded services' data, model registry, logs")
    kafka_bootstrap: str | None = Field(None, description="host:port[,host:port]; unset = embedded Tansu")
    database_url: str | None = Field(None, description="postgresql://...; unset = embedded PostgreSQL")
    topic_partitions: int = Field(4, ge=1, le=256)
    topic_prefix: str = Field("", description="prepended to every topic name (tests, several deployments)")

    base_model: Path | None = Field(None, description="HF checkpoint dir; unset = packaged all-MiniLM-L6-v2")
    sequence_length: int = Field(64, ge=2, le=1024, description="messages kept per viewer")
    viewer_idle_seconds: float = Field(6 * 3600, gt=0, description="a viewer sequence expires after this")
    embed_batch_size: int = Field(32, ge=1, le=1024)
    embed_batch_wait: float = Field(0.05, gt=0, le=5, description="seconds a micro-batch waits to fill")
    worker_threads: int = Field(1, ge=1, le=64, description="ONNX Runtime/torch intra-op threads per process")

    web_host: str = Field("127.0.0.1", description="address the worker's web server binds; [::1] and ::1 both work")
    web_port: int = Field(6066, ge=0, le=65535)
    dashboard_token: SecretStr | None = Field(None, description="required (16+ characters) off loopback")
    public_url: str | None = Field(None, description="https://name[:port] the dashboard is reached at behind a "
                                                     "proxy: its Host is allowed, and https makes the cookie Secure")
    youtube_api_key: SecretStr | None = None
    display_currency: str = Field("USD", description="currency the dashboard shows money in (ECB rates of each "
                                                     "event's date; ISO code, e.g. USD, EUR, JPY)")

    @field_validator("database_url")
    @classmethod
    def _postgres_scheme(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("postgres://", "postgresql://")):
            raise ValueError(
                f"DONORCAST_DATABASE_URL must start with postgresql:// (got {url.split(':', 1)[0]!r}:...)"
            )
        return url

    @field_validator("display_currency")
    @classmethod
    def _known_currency(cls, code: str) -> str:
        from infra.money import DISPLAY_CURRENCIES

        code = code.strip().upper()
        if code not in DISPLAY_CURRENCIES:
            raise ValueError(f"DONORCAST_DISPLAY_CURRENCY must be one of {', '.join(sorted(DISPLAY_CURRENCIES))} "
                             f"(got {code!r})")
        return code

    @field_validator("web_host")
    @classmethod
    def _bare_host(cls, host: str) -> str:
        # "[::1]" is how a URL writes an IPv6 address; the socket wants it bare.
        return host.strip().removeprefix("[").removesuffix("]")

    @field_validator("public_url")
    @classmethod
    def _public_url_form(cls, url: str | None) -> str | None:
        if url is None or url == "":
            return None
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"DONORCAST_PUBLIC_URL must be http(s)://host[:port][/path] (got {url!r})")
        return url.rstrip("/")

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_form(cls, value: str | None) -> str | None:
        if value is None:
            return None
        for part in value.removeprefix("kafka://").split(","):
            host, _, port = part.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"DONORCAST_KAFKA_BOOTSTRAP must be host:port[,host:port] (got {value!r})")
        return value.removeprefix("kafka://")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        environment = _ENVIRONMENT.get()
        if environment is not None:
            env_settings = _MappingEnvSource(settings_cls, environment)
        config_file = Path((os.environ if environment is None else environment).get(CONFIG_FILE_ENV,
                                                                                     DEFAULT_CONFIG_FILE))
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_file)
        return init_settings, env_settings, toml

    def to_env(self) -> dict[str, str]:
        """The DONORCAST_* variables under which a child process loads exactly these settings.

        The one way a Settings becomes environment variables (worker launches): every field that is
        set, secrets revealed (a worker needs the dashboard token), and no config file, since its
        values are already in these variables. Unset (None) fields are left out: each one's default
        is None. `load_settings(env=settings.to_env()) == settings`.
        """
        env = {CONFIG_FILE_ENV: os.devnull}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"{ENV_PREFIX}{name.upper()}"] = str(value)
        return env

    # Derived locations: one place decides the state layout.
    @property
    def registry_dir(self) -> Path:
        return self.state_dir / "models"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def uses_embedded_kafka(self) -> bool:
        return self.kafka_bootstrap is None

    @property
    def uses_embedded_postgres(self) -> bool:
        return self.database_url is None


def load_settings(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Settings from the environment (os.environ, or `env` instead) and config file, with explicit
    overrides on top (CLI flags, tests)."""
    with _reading(env):
        return Settings(**overrides)  # type: ignore[arg-type]


@contextmanager
def _reading(env: Mapping[str, str] | None) -> Iterator[None]:
    token = _ENVIRONMENT.set(env)
    try:
        yield
    finally:
        _ENVIRONMENT.reset(token)
