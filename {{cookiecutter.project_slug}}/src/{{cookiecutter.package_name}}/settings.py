"""Settings read from environment variables, with errors that name the variable at fault."""

import json
import os
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .auth import Keyring

SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
DEFAULT_REDIS_PREFIX = "{{ cookiecutter.project_slug }}:"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the environment variable."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the service needs to know about its environment."""

    database_url: str
    redis_url: str
    keyring: Keyring
    database_schema: str = "public"
    redis_prefix: str = DEFAULT_REDIS_PREFIX
    instance_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    allowed_origins: frozenset[str] = frozenset()
    host: str = "127.0.0.1"
    port: int = 8000
    database_pool_size: int = 10
    max_message_bytes: int = 64 * 1024
    send_queue_size: int = 256
    send_timeout_s: float = 10.0
    max_channels: int = 100
    publish_limit: int = 100
    publish_window_s: float = 10.0
    history_limit: int = 10_000
    ping_interval_s: float = 20.0
    ping_timeout_s: float = 20.0
    shutdown_delay_s: float = 0.0
    shutdown_timeout_s: float = 10.0
    serve_demo: bool = False

    def __post_init__(self) -> None:
        if not SCHEMA_NAME.fullmatch(self.database_schema):
            raise ConfigError(
                f"DATABASE_SCHEMA {self.database_schema!r} is invalid: use lowercase letters, "
                "digits and underscores, starting with a letter or underscore, at most 63 bytes"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Settings":
        """Read the settings from `environ`, raising ConfigError on the first bad variable."""
        given = {
            name: parse(variable, environ[variable])
            for name, (variable, parse) in OPTIONAL.items()
            if variable in environ
        }
        return cls(
            database_url=_required(environ, "DATABASE_URL", "postgresql://user@host:5432/db"),
            redis_url=_required(environ, "REDIS_URL", "redis://host:6379/0"),
            keyring=_keyring(environ),
            **given,
        )


def _text(name: str, raw: str) -> str:
    return raw


def _origins(name: str, raw: str) -> frozenset[str]:
    return frozenset(item.strip() for item in raw.split(",") if item.strip())


def _integer(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} {raw!r} is not an integer") from None
    if value <= 0:
        raise ConfigError(f"{name} {raw!r} must be positive")
    return value


def _flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value not in ("1", "true", "yes", "0", "false", "no", ""):
        raise ConfigError(f"{name} {raw!r} is not a yes/no flag (1/0, true/false, yes/no)")
    return value in ("1", "true", "yes")


def _seconds(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} {raw!r} is not a number of seconds") from None
    if not value >= 0:
        raise ConfigError(f"{name} {raw!r} must not be negative")
    return value


OPTIONAL: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "database_schema": ("DATABASE_SCHEMA", _text),
    "redis_prefix": ("REDIS_PREFIX", _text),
    "instance_id": ("INSTANCE_ID", _text),
    "allowed_origins": ("ALLOWED_ORIGINS", _origins),
    "host": ("HOST", _text),
    "port": ("PORT", _integer),
    "database_pool_size": ("DATABASE_POOL_SIZE", _integer),
    "max_message_bytes": ("MAX_MESSAGE_BYTES", _integer),
    "send_queue_size": ("SEND_QUEUE_SIZE", _integer),
    "send_timeout_s": ("SEND_TIMEOUT_S", _seconds),
    "max_channels": ("MAX_CHANNELS", _integer),
    "publish_limit": ("PUBLISH_LIMIT", _integer),
    "publish_window_s": ("PUBLISH_WINDOW_S", _seconds),
    "history_limit": ("HISTORY_LIMIT", _integer),
    "ping_interval_s": ("PING_INTERVAL_S", _seconds),
    "ping_timeout_s": ("PING_TIMEOUT_S", _seconds),
    "shutdown_delay_s": ("SHUTDOWN_DELAY_S", _seconds),
    "shutdown_timeout_s": ("SHUTDOWN_TIMEOUT_S", _seconds),
    "serve_demo": ("SERVE_DEMO", _flag),
}
"""Settings field -> (environment variable, parser); absent variables keep the defaults."""


def _required(environ: Mapping[str, str], name: str, example: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is not set: expected a URL such as {example}")
    return value


def _keyring(environ: Mapping[str, str]) -> Keyring:
    """The keyring from AUTH_KEYS (a JWKS document) or AUTH_KEYS_FILE (a path to one)."""
    if "AUTH_KEYS" in environ:
        source, text = "AUTH_KEYS", environ["AUTH_KEYS"]
    elif "AUTH_KEYS_FILE" in environ:
        source, path = "AUTH_KEYS_FILE", Path(environ["AUTH_KEYS_FILE"])
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"AUTH_KEYS_FILE {str(path)!r} cannot be read: {error}") from None
    else:
        raise ConfigError(
            "AUTH_KEYS or AUTH_KEYS_FILE must be set: the JWKS of the token issuers' public keys "
            f"(`python -m {__package__} keygen` makes one for development)"
        )
    try:
        return Keyring.from_jwks(json.loads(text))
    except ValueError as error:
        raise ConfigError(f"{source} does not hold a valid JWKS: {error}") from None
