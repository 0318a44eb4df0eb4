"""The command line: serve, migrate, add-user, keygen, token, settings and asyncapi."""

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

import psycopg

from . import logs, store{% if cookiecutter.tracing == "otel" %}, tracing{% endif %}
from .app import create_app
from .asyncapi import document
from .auth import SigningKey
from .migrations import migrate
from .resources import connection_kwargs, open_database_pool
from .server import serve
from .settings import (
    ConfigError,
    Settings,
    check_pooled_url,
    env_example,
    markdown_table,
    read,
)


def settings_or_exit() -> Settings:
    """Every setting, or exit naming the variable at fault."""
    try:
        return Settings.from_env()
    except ConfigError as error:
        sys.exit(f"configuration error: {error}")


def database_or_exit() -> tuple[str, str, str]:
    """DATABASE_URL, DATABASE_SCHEMA and DATABASE_POOLER alone, for the commands that only touch
    Postgres."""
    try:
        values = read(("database_url", "database_schema", "database_pooler"))
        check_pooled_url(values["database_url"], values["database_pooler"])
    except ConfigError as error:
        sys.exit(f"configuration error: {error}")
    return values["database_url"], values["database_schema"], values["database_pooler"]


def run_server(args: argparse.Namespace) -> None:
    """Run the service under uvicorn."""
    settings = settings_or_exit()
{%- if cookiecutter.tracing == "otel" %}
    tracing.configure(settings.instance_id)
{%- endif %}
    serve(create_app(settings), settings)


def run_migrations(args: argparse.Namespace) -> None:
    """Apply pending migrations into DATABASE_SCHEMA."""
    url, schema, pooler = database_or_exit()
    with psycopg.connect(url, **connection_kwargs(pooler)) as conn:
        applied = migrate(conn, schema)
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied) or "nothing pending"
    print(f"migrated schema {schema}: {names}")


def add_user(args: argparse.Namespace) -> None:
    """Create a user and print its id."""
    url, schema, pooler = database_or_exit()

    async def create() -> str:
        pool = await open_database_pool(url, schema, 1, pooler)
        try:
            return await store.create_user(pool, args.name)
        finally:
            await pool.close()

    print(asyncio.run(create()))


def keygen(args: argparse.Namespace) -> None:
    """Write a new private signing key and print the matching public JWKS."""
    key = SigningKey.generate(args.issuer)
    args.private_key.write_text(json.dumps(key.private_jwk()), encoding="utf-8")
    args.private_key.chmod(0o600)
    print(json.dumps(key.jwks()))


def token(args: argparse.Namespace) -> None:
    """Print a token for a user, signed with a key written by `keygen`."""
    key = SigningKey.from_jwk(json.loads(args.private_key.read_text(encoding="utf-8")))
    print(key.issue(args.user_id, ttl=args.ttl))


def print_settings(args: argparse.Namespace) -> None:
    """Print every setting: variable, default and meaning, as a Markdown table (or, with --env,
    as the .env.example file)."""
    print(env_example() if args.env else markdown_table(), end="")


def print_asyncapi(args: argparse.Namespace) -> None:
    """Print the AsyncAPI document, as /asyncapi.json serves it to a client of --host."""
    print(json.dumps(document(args.host, args.protocol), indent=2))


def parser() -> argparse.ArgumentParser:
    commands = argparse.ArgumentParser(prog=f"python -m {__package__}")
    sub = commands.add_subparsers(required=True)
    sub.add_parser("serve", help=run_server.__doc__).set_defaults(run=run_server)
    sub.add_parser("migrate", help=run_migrations.__doc__).set_defaults(run=run_migrations)
    user = sub.add_parser("add-user", help=add_user.__doc__)
    user.add_argument("name")
    user.set_defaults(run=add_user)
    key = sub.add_parser("keygen", help=keygen.__doc__)
    key.add_argument("--issuer", default="dev")
    key.add_argument("--private-key", type=Path, default=Path("signing-key.json"))
    key.set_defaults(run=keygen)
    tok = sub.add_parser("token", help=token.__doc__)
    tok.add_argument("user_id")
    tok.add_argument("--private-key", type=Path, default=Path("signing-key.json"))
    tok.add_argument("--ttl", type=float, default=3600.0)
    tok.set_defaults(run=token)
    listing = sub.add_parser("settings", help=print_settings.__doc__)
    listing.add_argument("--env", action="store_true", help="print .env.example instead")
    listing.set_defaults(run=print_settings)
    spec = sub.add_parser("asyncapi", help=print_asyncapi.__doc__)
    spec.add_argument("--host", default="127.0.0.1:8000")
    spec.add_argument("--protocol", choices=("ws", "wss"), default="ws")
    spec.set_defaults(run=print_asyncapi)
    return commands


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    logs.configure(logging.INFO)
    args.run(args)


if __name__ == "__main__":
    main()
