"""One error hierarchy. Messages say what went wrong and which setting or command fixes it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pydantic is imported by whoever has a ValidationError to describe, not here
    from pydantic import BaseModel, ValidationError
    from pydantic.fields import FieldInfo


class DonorcastError(Exception):
    """Base of every error we raise on purpose; the CLI prints these without a traceback."""


class ServiceError(DonorcastError):
    """An embedded or external service could not be started or reached."""


class KafkaUnavailable(ServiceError):
    pass


class DatabaseUnavailable(ServiceError):
    pass


class InputError(DonorcastError):
    """A file, record or argument we cannot use."""


class ModelNotFound(DonorcastError):
    """No model in the registry matches the request."""


class RetriesExceeded(DonorcastError):
    """A network operation failed after capped back-off."""


class SettingsError(DonorcastError):
    """A setting (environment variable, config file key or option) has a value we cannot use."""


def describe_settings_error(error: ValidationError, model: type[BaseModel], *, env_prefix: str,
                            config_file: str, options: Mapping[str, str]) -> str:
    """pydantic's multi-line report as one line: which variable, what it was, what it may be.

    Each problem names where the value came from: the `--option` it was given with (`options`:
    field -> option), else the environment variable if that is set, else the config file key.
    Strings are never echoed (they may be URLs with passwords, or tokens); numbers are."""
    parts = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else ""
        info = model.model_fields.get(field)
        given = item.get("input")
        value = repr(given) if isinstance(given, int | float) or _is_numeric(info) else None
        where = _source(field, value, env_prefix, config_file, options)
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            parts.append(f"{where} is not a setting (settings: {', '.join(model.model_fields)})")
        elif item["type"] == "value_error":  # our own validators already name the variable and the rule
            parts.append(message)
        else:
            allowed = _allowed(info) if info is not None else ""
            parts.append(f"{where} is invalid: " + (f"it must be {allowed}" if allowed else message))
    return "invalid settings: " + "; ".join(parts)


def _source(field: str, value: str | None, env_prefix: str, config_file: str, options: Mapping[str, str]) -> str:
    import os

    variable = f"{env_prefix}{field}".upper()
    if field in options:
        return f"{options[field]} {value}" if value else options[field]
    if any(name.upper() == variable for name in os.environ):
        return f"{variable}={value}" if value else variable
    return f"{field} = {value} in {config_file}" if value else f"{field} in {config_file}"


def _is_numeric(info: FieldInfo | None) -> bool:
    return info is not None and info.annotation in (int, float, bool)


def _allowed(info: FieldInfo) -> str:
    """'an integer from 1 to 256', 'a number > 0 and <= 5', 'true or false', from the field's type and bounds."""
    kind = {int: "an integer", float: "a number", bool: "true or false"}.get(info.annotation)  # type: ignore[arg-type]
    if kind is None:
        return ""
    bounds = {type(m).__name__: getattr(m, type(m).__name__.lower()) for m in info.metadata  # annotated_types
              if type(m).__name__ in ("Ge", "Gt", "Le", "Lt")}
    if "Ge" in bounds and "Le" in bounds:
        return f"{kind} from {bounds['Ge']} to {bounds['Le']}"
    symbols = {"Gt": ">", "Ge": ">=", "Lt": "<", "Le": "<="}
    limits = " and ".join(f"{symbols[name]} {value}" for name, value in bounds.items())
    return f"{kind} {limits}".strip()
