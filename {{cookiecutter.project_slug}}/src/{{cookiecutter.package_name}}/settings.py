"""Settings read from environment variables, with errors that name the variable at fault."""

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

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
    allowed_origins: frozenset[str] = field(default_factory=frozenset)
    host: str = "127.0.0.1"
    port: int = 8000
    database_pool_size: int = 10
    max_message_bytes: int = 64 * 1024
    send_queue_size: int = 256

    def __post_init__(self) -> None:
        if not SCHEMA_NAME.fullmatch(self.database_schema):
            raise ConfigError(
                f"DATABASE_SCHEMA {self.database_schema!r} is invalid: use lowercase letters, "
                "digits and underscores, starting with a letter or underscore, at most 63 bytes"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Settings":
        """Read the settings from `environ`, raising ConfigError on the first bad variable."""
        return cls(
            database_url=_required(environ, "DATABASE_URL", "postgresql://user@host:5432/db"),
            redis_url=_required(environ, "REDIS_URL", "redis://host:6379/0"),
            keyring=_keyring(environ),
            database_schema=environ.get("DATABASE_SCHEMA", "public"),
            redis_prefix=environ.get("REDIS_PREFIX", DEFAULT_REDIS_PREFIX),
            allowed_origins=frozenset(_split(environ.get("ALLOWED_ORIGINS", ""))),
            host=environ.get("HOST", "127.0.0.1"),
            port=_integer(environ, "PORT", 8000),
            database_pool_size=_integer(environ, "DATABASE_POOL_SIZE", 10),
            max_message_bytes=_integer(environ, "MAX_MESSAGE_BYTES", 64 * 1024),
            send_queue_size=_integer(environ, "SEND_QUEUE_SIZE", 256),
        )


def _required(environ: Mapping[str, str], name: str, example: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is not set: expected a URL such as {example}")
    return value


def _integer(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} {raw!r} is not an integer") from None
    if value <= 0:
        raise ConfigError(f"{name} {raw!r} must be positive")
    return value


def _split(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


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
