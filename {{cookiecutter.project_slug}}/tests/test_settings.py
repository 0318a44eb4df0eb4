"""Settings from the environment: defaults, and errors that name the variable at fault."""

import json
import re
import subprocess
import sys
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.auth import SigningKey
from {{ cookiecutter.package_name }}.settings import (
    ConfigError,
    Settings,
    env_example,
    markdown_table,
    read,
)

OPTIONS = "options=-c%20statement_timeout%3D5s"


@pytest.fixture(scope="module")
def environ() -> dict[str, str]:
    return {
        "DATABASE_URL": "postgresql://db/app",
        "REDIS_URL": "redis://cache/0",
        "AUTH_KEYS": json.dumps(SigningKey.generate("idp").jwks()),
    }


def test_minimal_environment_gives_working_defaults(environ: dict[str, str]) -> None:
    settings = Settings.from_env(environ)
    assert settings.database_schema == "public"
    assert settings.redis_prefix.endswith(":")
    assert settings.allowed_origins == frozenset()
    assert settings.forwarded_allow_ips == frozenset()
    assert len(settings.keyring.keys) == 1


def test_lists_numbers_and_flags_are_parsed(environ: dict[str, str]) -> None:
    settings = Settings.from_env(
        {
            **environ,
            "ALLOWED_ORIGINS": "https://a.example, https://b.example ,",
            "PORT": "9000",
            "PUBLISH_WINDOW_S": "2.5",
            "SERVE_DEMO": "yes",
            "FORWARDED_ALLOW_IPS": "10.0.0.7, 10.1.0.0/16,fd00::/8",
            "REDIS_SENTINELS": "s1:26379, [::1]:26380",
        }
    )
    assert settings.allowed_origins == {"https://a.example", "https://b.example"}
    assert {str(network) for network in settings.forwarded_allow_ips} == {
        "10.0.0.7/32",
        "10.1.0.0/16",
        "fd00::/8",
    }
    assert (settings.port, settings.publish_window_s, settings.serve_demo) == (9000, 2.5, True)
    assert settings.redis_sentinels == (("s1", 26379), ("::1", 26380))


def test_keyring_can_come_from_a_file(environ: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(environ["AUTH_KEYS"])
    without_inline = {k: v for k, v in environ.items() if k != "AUTH_KEYS"}
    settings = Settings.from_env({**without_inline, "AUTH_KEYS_FILE": str(path)})
    assert len(settings.keyring.keys) == 1


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"DATABASE_URL": ""}, "DATABASE_URL is not set"),
        ({"REDIS_URL": " "}, "REDIS_URL is not set"),
        ({"PORT": "eighty"}, "PORT 'eighty' is not an integer"),
        ({"SEND_QUEUE_SIZE": "0"}, "SEND_QUEUE_SIZE '0' must be positive"),
        ({"DATABASE_SCHEMA": "Robert'); DROP"}, "DATABASE_SCHEMA"),
        ({"AUTH_KEYS": "{not json"}, "AUTH_KEYS does not hold a valid JWKS"),
        ({"AUTH_KEYS": '{"keys": []}'}, "AUTH_KEYS does not hold a valid JWKS: the keyring"),
        ({"PING_INTERVAL_S": "soon"}, "PING_INTERVAL_S 'soon' is not a number of seconds"),
        ({"SHUTDOWN_DELAY_S": "-1"}, "SHUTDOWN_DELAY_S '-1' must not be negative"),
        ({"POSITION_CHECK_S": "0"}, "POSITION_CHECK_S '0' must be positive"),
        ({"HANDSHAKE_DB_TIMEOUT_S": "0"}, "HANDSHAKE_DB_TIMEOUT_S '0' must be positive"),
        ({"REQUEST_RATE": "fast"}, "REQUEST_RATE 'fast' is not a number of requests per second"),
        ({"REQUEST_RATE": "0"}, "REQUEST_RATE '0' must be positive"),
        ({"SERVE_DEMO": "maybe"}, "SERVE_DEMO 'maybe' is not a yes/no flag"),
        ({"REDIS_CLUSTER": "sometimes"}, "REDIS_CLUSTER 'sometimes' is not one of: auto, yes, no"),
        ({"STREAM_PARTITIONS": "0"}, "STREAM_PARTITIONS '0' must be positive"),
        ({"STREAM_PARTITIONS": "1000"}, "STREAM_PARTITIONS '1000' is too large: at most 256"),
        ({"REDIS_PREFIX": "app:{x}:"}, "REDIS_PREFIX 'app:{x}:' is invalid: it must not contain"),
        ({"FORWARDED_ALLOW_IPS": "10.0.0.1,lb"}, "FORWARDED_ALLOW_IPS 'lb' is not an IP address"),
        ({"FORWARDED_ALLOW_IPS": "10.0.0.5/8"}, "FORWARDED_ALLOW_IPS '10.0.0.5/8' is not an IP"),
        ({"FORWARDED_ALLOW_IPS": "*"}, "FORWARDED_ALLOW_IPS '*' would trust every peer"),
        ({"DATABASE_POOLER": "session"}, "DATABASE_POOLER 'session' is not one of: none, trans"),
        (
            {"DATABASE_POOLER": "transaction", "DATABASE_URL": f"postgresql://db/app?{OPTIONS}"},
            "DATABASE_URL sets options ('-c statement_timeout=5s'), which"
            " DATABASE_POOLER=transaction cannot pass",
        ),
        ({"REDIS_SENTINELS": "s1:26379,s2"}, "REDIS_SENTINELS entry 's2' is not host:port"),
        ({"REDIS_SENTINELS": "s1:0"}, "REDIS_SENTINELS entry 's1:0' is not host:port"),
        (
            {"REDIS_SENTINELS": "s1:26379", "REDIS_URL": "unix:///run/redis.sock"},
            "REDIS_URL must be redis:// or rediss:// with REDIS_SENTINELS",
        ),
        (
            {"REDIS_SENTINELS": "s1:26379", "REDIS_CLUSTER": "yes"},
            "REDIS_CLUSTER=yes cannot go with REDIS_SENTINELS",
        ),
    ],
)
def test_bad_variable_is_named(
    environ: dict[str, str], change: dict[str, str], complaint: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(complaint)):
        Settings.from_env({**environ, **change})


def test_a_choice_is_read_in_any_case(environ: dict[str, str]) -> None:
    chosen = {"DATABASE_POOLER": " Transaction", "REDIS_CLUSTER": "NO"}
    settings = Settings.from_env({**environ, **chosen})
    assert (settings.database_pooler, settings.redis_cluster) == ("transaction", "no")


@pytest.mark.parametrize("pooler", ["none", "transaction"])
def test_options_in_the_url_pass_only_without_a_pooler(
    environ: dict[str, str], pooler: str
) -> None:
    with_options = {**environ, "DATABASE_URL": f"postgresql://db/app?{OPTIONS}"}
    assert Settings.from_env({**environ, "DATABASE_POOLER": pooler}).database_pooler == pooler
    if pooler == "none":
        assert Settings.from_env(with_options).database_url.endswith(OPTIONS)
    else:
        with pytest.raises(ConfigError, match="DATABASE_POOLER=transaction"):
            Settings.from_env({**with_options, "DATABASE_POOLER": pooler})


def test_migrate_refuses_options_under_a_transaction_pooler(pytestconfig: pytest.Config) -> None:
    environment = {
        "PYTHONPATH": str(pytestconfig.rootpath / "src"),
        "DATABASE_URL": f"postgresql://127.0.0.1:1/app?{OPTIONS}",
        "DATABASE_POOLER": "transaction",
    }
    result = subprocess.run(
        [sys.executable, "-m", "{{ cookiecutter.package_name }}", "migrate"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("configuration error: DATABASE_URL sets options"), result.stderr
    assert "DATABASE_POOLER=transaction cannot pass" in result.stderr


def test_missing_keyring_says_how_to_make_one(environ: dict[str, str]) -> None:
    without = {k: v for k, v in environ.items() if k != "AUTH_KEYS"}
    with pytest.raises(ConfigError, match=r"AUTH_KEYS or AUTH_KEYS_FILE must be set.*keygen"):
        Settings.from_env(without)


def test_unreadable_keyring_file_is_named(environ: dict[str, str], tmp_path: Path) -> None:
    without = {k: v for k, v in environ.items() if k != "AUTH_KEYS"}
    with pytest.raises(ConfigError, match=r"AUTH_KEYS_FILE .* cannot be read"):
        Settings.from_env({**without, "AUTH_KEYS_FILE": str(tmp_path / "missing.json")})


def test_the_readme_lists_every_setting_as_declared() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    assert markdown_table() in readme, (
        "the README's settings table is out of date: paste the output of"
        " `python -m {{ cookiecutter.package_name }} settings` into it"
    )


def test_the_env_example_lists_every_setting_as_declared() -> None:
    example = (Path(__file__).parents[1] / ".env.example").read_text(encoding="utf-8")
    assert example == env_example(), ".env.example is out of date: remake it as its header says"


def test_the_env_example_spells_the_defaults_the_service_uses() -> None:
    written = dict(re.findall(r"^# ([A-Z_]+)=(.+)$", env_example(), flags=re.MULTILINE))
    with_default = [setting for setting in fields(Settings) if setting.default is not MISSING]
    spelt = [setting.name for setting in with_default if setting.metadata["variable"] in written]
    assert read(spelt, written) == read(spelt, {})
    # Only the defaults with no spelling as a value, the empty lists, are told in words.
    told = {"allowed_origins", "forwarded_allow_ips", "redis_sentinels"}
    assert {setting.name for setting in with_default} - set(spelt) == told


def test_a_command_reads_only_the_settings_it_uses() -> None:
    environ = {"DATABASE_URL": "postgresql://db.example/app"}
    assert read(("database_url", "database_schema"), environ) == {
        "database_url": "postgresql://db.example/app",
        "database_schema": "public",
    }
    with pytest.raises(ConfigError, match="DATABASE_SCHEMA 'Bad;' is invalid"):
        read(("database_schema",), {"DATABASE_SCHEMA": "Bad;"})
    with pytest.raises(ConfigError, match="DATABASE_URL is not set"):
        read(("database_url",), {})
