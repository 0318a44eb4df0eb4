"""Settings read from environment variables, with errors that name the variable at fault.

Each setting is declared once, as a field of `Settings` carrying its environment variable, its
parser and its documentation: `from_env`, `markdown_table` (the README's table, which a test
keeps in step) and the `settings` command all read that one declaration.
"""

import ipaddress
import json
import os
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any

from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict

from .auth import Keyring

SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
DEFAULT_REDIS_PREFIX = "{{ cookiecutter.project_slug }}:"
POOLERS = ("none", "transaction")
# On a cluster, each partition holds a blocked connection per instance.
MAX_STREAM_PARTITIONS = 256


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the environment variable."""


def _text(name: str, raw: str) -> str:
    return raw


def _url(name: str, raw: str) -> str:
    return raw.strip()


def _schema(name: str, raw: str) -> str:
    if not SCHEMA_NAME.fullmatch(raw):
        raise ConfigError(
            f"{name} {raw!r} is invalid: use lowercase letters, digits and underscores, starting"
            " with a letter or underscore, at most 63 bytes"
        )
    return raw


def _prefix(name: str, raw: str) -> str:
    if "{" in raw or "}" in raw:
        raise ConfigError(
            f"{name} {raw!r} is invalid: it must not contain braces, which would make it the hash"
            " tag of every key and put them all in one Redis Cluster slot"
        )
    return raw


def _one_of(*choices: str) -> Callable[[str, str], str]:
    """A parser of a setting that is one of `choices`, in any case."""

    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ConfigError(f"{name} {raw!r} is not one of: {', '.join(choices)}")
        return value

    return parse


_cluster_mode = _one_of("auto", "yes", "no")
_pooler = _one_of(*POOLERS)


def _partitions(name: str, raw: str) -> int:
    value = _integer(name, raw)
    if value > MAX_STREAM_PARTITIONS:
        raise ConfigError(f"{name} {raw!r} is too large: at most {MAX_STREAM_PARTITIONS}")
    return value


def _origins(name: str, raw: str) -> frozenset[str]:
    return frozenset(item.strip() for item in raw.split(",") if item.strip())


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(name: str, raw: str) -> frozenset[Network]:
    networks = set()
    for item in (item.strip() for item in raw.split(",")):
        if item == "*":
            # uvicorn's "trust everyone" also takes the first X-Forwarded-For entry, which the
            # client itself wrote wherever the balancer adds to the header (HAProxy, nginx).
            raise ConfigError(
                f"{name} '*' would trust every peer, and what any client claims: list the"
                " balancers' addresses or networks"
            )
        if item:
            try:
                networks.add(ipaddress.ip_network(item))
            except ValueError as error:
                raise ConfigError(
                    f"{name} {item!r} is not an IP address or network: {error}"
                ) from None
    return frozenset(networks)


def _addresses(name: str, raw: str) -> tuple[tuple[str, int], ...]:
    addresses = []
    for item in (item.strip() for item in raw.split(",")):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{name} entry {item!r} is not host:port")
        addresses.append((host.removeprefix("[").removesuffix("]"), int(port)))
    return tuple(addresses)


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


def _number(name: str, raw: str, unit: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} {raw!r} is not a number of {unit}") from None


def _seconds(name: str, raw: str) -> float:
    value = _number(name, raw, "seconds")
    if not value >= 0:
        raise ConfigError(f"{name} {raw!r} must not be negative")
    return value


def _positive(name: str, raw: str, unit: str) -> float:
    value = _number(name, raw, unit)
    if not value > 0:
        raise ConfigError(f"{name} {raw!r} must be positive")
    return value


def _positive_seconds(name: str, raw: str) -> float:
    return _positive(name, raw, "seconds")


def _rate(name: str, raw: str) -> float:
    return _positive(name, raw, "requests per second")


Parser = Callable[[str, str], Any]
"""Turns (variable name, raw value) into the setting's value, or raises ConfigError."""


def _setting(variable: str, parse: Parser, doc: str, default: Any = MISSING, **extra: Any) -> Any:
    """A dataclass field declaring its environment variable, parser and documentation."""
    metadata = {"variable": variable, "parse": parse, "doc": doc, **extra}
    if "default_factory" in extra:
        return field(default_factory=metadata.pop("default_factory"), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the service needs to know about its environment."""

    database_url: str = _setting(
        "DATABASE_URL", _url, "PostgreSQL URL, e.g. `postgresql://user@host:5432/db`"
    )
    redis_url: str = _setting("REDIS_URL", _url, "Redis URL, e.g. `redis://host:6379/0`")
    keyring: Keyring = _setting(
        "AUTH_KEYS / AUTH_KEYS_FILE",
        _text,
        "JWKS of the token issuers' public keys (inline or a path)",
    )
    database_schema: str = _setting(
        "DATABASE_SCHEMA",
        _schema,
        "schema the service's tables live in; every query names it",
        "public",
    )
    database_pooler: str = _setting(
        "DATABASE_POOLER",
        _pooler,
        "what is between the service and Postgres: `none`, or `transaction` for a transaction"
        " pooler (PgBouncer's `pool_mode = transaction`), which takes no `options` in"
        " `DATABASE_URL` and no prepared statements (README: Connection poolers)",
        "none",
    )
    redis_prefix: str = _setting(
        "REDIS_PREFIX",
        _prefix,
        "prefix of every Redis key and stream (no braces: the keys carry their own hash tags)",
        DEFAULT_REDIS_PREFIX,
    )
    redis_cluster: str = _setting(
        "REDIS_CLUSTER",
        _cluster_mode,
        "`auto` uses redis-py's cluster client when the server at `REDIS_URL` is a Redis Cluster"
        " node (`INFO cluster`); `yes` insists on one (and refuses to start without), `no` never"
        " uses it",
        "auto",
    )
    stream_partitions: int = _setting(
        "STREAM_PARTITIONS",
        _partitions,
        "how many streams the fan-out spreads channels over (a channel always uses the same one);"
        f" each its own cluster slot, read by every instance; at most {MAX_STREAM_PARTITIONS}."
        " Every instance of a deployment must use the same count (README: Redis Cluster)",
        12,
    )
    redis_sentinels: tuple[tuple[str, int], ...] = _setting(
        "REDIS_SENTINELS",
        _addresses,
        "comma-separated `host:port`s of Redis Sentinels: the service then uses the primary they"
        " name `REDIS_SENTINEL_MASTER` and follows failovers, and `REDIS_URL` gives only its"
        " database, credentials and TLS (`rediss://`), not its address",
        (),
        shown="none",
    )
    redis_sentinel_master: str = _setting(
        "REDIS_SENTINEL_MASTER",
        _text,
        "the primary's name in the Sentinels' `sentinel monitor` (with `REDIS_SENTINELS`)",
        "mymaster",
    )
    instance_id: str = _setting(
        "INSTANCE_ID",
        _text,
        "names this instance's consumer group; keep it stable across restarts (a pod name) so a"
        " restarted instance delivers what it had not acknowledged",
        default_factory=lambda: uuid.uuid4().hex[:12],
        shown="random per process",
    )
    allowed_origins: frozenset[str] = _setting(
        "ALLOWED_ORIGINS",
        _origins,
        "comma-separated `Origin`s browsers may connect from",
        frozenset(),
        shown="none",
    )
    forwarded_allow_ips: frozenset[Network] = _setting(
        "FORWARDED_ALLOW_IPS",
        _networks,
        "comma-separated addresses or networks (CIDR) of the balancers in front: from these peers"
        " only, `X-Forwarded-For` gives the client's address (README: Behind a load balancer)",
        frozenset(),
        shown="none",
    )
    host: str = _setting("HOST", _text, "address `serve` listens on", "127.0.0.1")
    port: int = _setting("PORT", _integer, "port `serve` listens on", 8000)
    database_pool_size: int = _setting(
        "DATABASE_POOL_SIZE", _integer, "most Postgres connections per process", 10
    )
    database_timeout_s: float = _setting(
        "DATABASE_TIMEOUT_S",
        _positive_seconds,
        "how long a request waits for a Postgres connection before it is answered `unavailable`",
        3.0,
    )
    max_message_bytes: int = _setting(
        "MAX_MESSAGE_BYTES", _integer, "largest frame a client may send", 64 * 1024
    )
    send_queue_size: int = _setting(
        "SEND_QUEUE_SIZE",
        _integer,
        "frames queued for a client before it counts as too slow (4008)",
        256,
    )
    send_timeout_s: float = _setting(
        "SEND_TIMEOUT_S",
        _seconds,
        "how long replies and replays wait for a client that takes no frame before it counts as"
        " too slow (4008)",
        10.0,
    )
    max_channels: int = _setting(
        "MAX_CHANNELS", _integer, "channels one connection may subscribe to", 100
    )
    max_connections_per_user: int = _setting(
        "MAX_CONNECTIONS_PER_USER",
        _integer,
        "connections one user may hold on one instance; more are refused with HTTP 429",
        20,
    )
    max_connections_per_ip: int = _setting(
        "MAX_CONNECTIONS_PER_IP",
        _integer,
        "connections one client address may hold on one instance; more are refused with HTTP 429",
        200,
    )
    request_rate: float = _setting(
        "REQUEST_RATE",
        _rate,
        "requests per second one connection may sustain (any type); past its burst, requests get"
        " `rate_limited`",
        100.0,
    )
    request_burst: int = _setting(
        "REQUEST_BURST",
        _integer,
        "requests one connection may send at once; refusals are forgiven at REQUEST_RATE a"
        " second, and a client refused a burst's worth more than that is closed with 4029",
        1000,
    )
    publish_limit: int = _setting(
        "PUBLISH_LIMIT",
        _integer,
        "publishes per user in any `PUBLISH_WINDOW_S`, counted in Redis across connections and"
        " instances",
        100,
    )
    publish_window_s: float = _setting(
        "PUBLISH_WINDOW_S", _seconds, "the sliding window of `PUBLISH_LIMIT`", 10.0
    )
    history_limit: int = _setting(
        "HISTORY_LIMIT",
        _integer,
        "most missed messages a `since` resume replays; further behind, it is refused"
        " (`history_limit`)",
        10_000,
    )
    position_check_s: float = _setting(
        "POSITION_CHECK_S",
        _positive_seconds,
        "how often each instance compares its channels with their newest offsets in Postgres and"
        " delivers what the stream never brought (a failed XADD, Redis flushed)",
        1.0,
    )
    max_token_ttl_s: float = _setting(
        "MAX_TOKEN_TTL_S",
        _seconds,
        "tokens still valid for longer than this are refused at the handshake",
        86_400.0,
    )
    handshake_db_timeout_s: float = _setting(
        "HANDSHAKE_DB_TIMEOUT_S",
        _positive_seconds,
        "how long a handshake waits for Postgres to confirm its user before it is refused with"
        " 503 `unavailable`",
        3.0,
    )
    user_check_s: float = _setting(
        "USER_CHECK_S",
        _seconds,
        "how often each instance closes the sessions of users disabled or deleted since (4003)",
        5.0,
    )
    close_timeout_s: float = _setting(
        "CLOSE_TIMEOUT_S",
        _seconds,
        "how long a closing connection may wait for the client's close frame before its socket is"
        " aborted",
        5.0,
    )
    compression: bool = _setting(
        "COMPRESSION",
        _flag,
        "negotiate permessage-deflate with clients that offer it: fewer bytes on the wire, but"
        " every frame compressed again for each subscriber, and about 40 KB more memory per"
        " connection (README: Performance)",
        False,
        shown="off",
    )
    ping_interval_s: float = _setting(
        "PING_INTERVAL_S", _seconds, "how often the server pings each client", 20.0
    )
    ping_timeout_s: float = _setting(
        "PING_TIMEOUT_S",
        _seconds,
        "how long a ping may go unanswered before the client is dropped",
        20.0,
    )
    shutdown_delay_s: float = _setting(
        "SHUTDOWN_DELAY_S",
        _seconds,
        "after SIGTERM, how long readiness reports 503 (new connections refused) before sessions"
        " are closed",
        0.0,
    )
    shutdown_timeout_s: float = _setting(
        "SHUTDOWN_TIMEOUT_S",
        _seconds,
        "how long closing sessions may take before they are cut",
        10.0,
    )
    serve_demo: bool = _setting(
        "SERVE_DEMO",
        _flag,
        "serve the demo page at `/demo` (`make dev` turns it on)",
        False,
        shown="off",
    )

    def __post_init__(self) -> None:
        _schema("DATABASE_SCHEMA", self.database_schema)
        check_pooled_url(self.database_url, _pooler("DATABASE_POOLER", self.database_pooler))
        if self.redis_sentinels and not self.redis_url.startswith(("redis://", "rediss://")):
            # The Sentinels give an address to connect to; a Unix socket's URL has none.
            raise ConfigError("REDIS_URL must be redis:// or rediss:// with REDIS_SENTINELS")
        if self.redis_sentinels and self.redis_cluster == "yes":
            # Sentinel watches one primary and its replicas; a cluster has a primary per slot.
            raise ConfigError("REDIS_CLUSTER=yes cannot go with REDIS_SENTINELS: choose one")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Settings":
        """Read the settings from `environ`, raising ConfigError on the first bad variable."""
        values: dict[str, Any] = {"keyring": _keyring(environ)}
        for setting in fields(cls):
            if setting.name not in values:
                value = _parsed(setting, environ)
                if value is not MISSING:
                    values[setting.name] = value
        return cls(**values)


def check_pooled_url(url: str, pooler: str) -> None:
    """Refuse a DATABASE_URL that cannot pass `pooler`: PgBouncer refuses a connection that
    starts with `options`, and ignoring them (`ignore_startup_parameters`) loses their settings."""
    if pooler != "transaction":
        return
    try:
        options = conninfo_to_dict(url).get("options")
    except ProgrammingError as error:
        raise ConfigError(f"DATABASE_URL is not a valid PostgreSQL URL: {error}") from None
    if options:
        raise ConfigError(
            f"DATABASE_URL sets options ({options!r}), which DATABASE_POOLER=transaction cannot"
            " pass: a transaction pooler refuses them. Set them on the role instead"
            " (ALTER ROLE ... SET), or use DATABASE_POOLER=none for a direct connection"
        )


def read(names: Iterable[str], environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """Only the named settings, parsed as declared (their defaults where unset): for commands
    that need a few of them, and should not demand the rest."""
    values: dict[str, Any] = {}
    for setting in fields(Settings):
        if setting.name in names:
            value = _parsed(setting, environ)
            values[setting.name] = _default(setting) if value is MISSING else value
    return values


def _parsed(setting: Field[Any], environ: Mapping[str, str]) -> Any:
    """The setting's value from `environ`; MISSING when unset, or ConfigError if it is required."""
    variable, parse = setting.metadata["variable"], setting.metadata["parse"]
    raw = environ.get(variable, "")
    if raw.strip():
        return parse(variable, raw)
    if _required(setting):
        raise ConfigError(f"{variable} is not set: {setting.metadata['doc']}")
    return MISSING


def markdown_table() -> str:
    """The settings as the README's Markdown table: variable, default, meaning."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for setting in fields(Settings):
        variable = " / ".join(f"`{name}`" for name in setting.metadata["variable"].split(" / "))
        rows.append(f"| {variable} | {_shown_default(setting)} | {setting.metadata['doc']} |")
    return "\n".join(rows) + "\n"


def env_example() -> str:
    """The settings as the committed `.env.example`: each one's meaning, then its variable set to
    its default and commented out, or left empty where it must be set."""
    lines = [
        "# Every setting of the service, read from the environment (the README's Configuration).",
        f"# Written by `python -m {__package__} settings --env`; a test keeps it in step.",
    ]
    for setting in fields(Settings):
        variables = setting.metadata["variable"].split(" / ")
        value, active = _env_default(setting), False
        if _required(setting) and len(variables) == 1:
            note, active = " (required)", True
        elif _required(setting):
            # An alternative set to nothing would still count as the one chosen.
            note = " (required: one of these)"
        else:
            # A default that has no spelling as a value (computed, or empty) is told instead.
            note = "" if value else f" (default: {_shown_default(setting)})"
        lines += ["", f"# {setting.metadata['doc']}{note}"]
        lines += [f"{'' if active else '# '}{variable}={value}" for variable in variables]
    return "\n".join(lines) + "\n"


def _env_default(setting: Field[Any]) -> str:
    """The default as the variable's value would spell it; empty where there is none to spell."""
    if _required(setting) or _has_factory(setting):
        return ""
    default = setting.default
    if isinstance(default, bool):
        return "yes" if default else "no"
    if isinstance(default, frozenset):
        return ",".join(sorted(default))
    if isinstance(default, tuple):
        return ",".join(f"{host}:{port}" for host, port in default)
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


def _default(setting: Field[Any]) -> Any:
    """The declared default, made afresh where a factory declares it."""
    factory = setting.default_factory
    return setting.default if factory is MISSING else factory()


def _required(setting: Field[Any]) -> bool:
    return setting.default is MISSING and not _has_factory(setting)


def _has_factory(setting: Field[Any]) -> bool:
    return setting.default_factory is not MISSING


def _shown_default(setting: Field[Any]) -> str:
    if "shown" in setting.metadata:
        return str(setting.metadata["shown"])
    if _required(setting):
        return "required"
    default = setting.default
    if isinstance(default, float) and default.is_integer():
        default = int(default)
    return f"`{default}`"


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
