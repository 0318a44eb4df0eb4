"""Jinja extensions that cookiecutter.json loads through `_extensions`."""

import contextlib
import functools
import logging
import os
import shutil
import subprocess

from cookiecutter.exceptions import FailedHookException
from jinja2 import Environment
from jinja2.ext import Extension

_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}
# TOML basic strings reject raw ASCII control characters; the ones without a short escape
# become \uXXXX. Everything else, astral characters included, is valid UTF-8 TOML as is.
_TOML_ESCAPES = str.maketrans(
    {chr(code): f"\\u{code:04X}" for code in (*range(0x20), 0x7F)} | _SHORT_ESCAPES
)


def toml_string(value: str) -> str:
    """Render a string as a TOML basic string literal, quotes included."""
    return f'"{value.translate(_TOML_ESCAPES)}"'


class TomlStringExtension(Extension):
    """Add the `toml` filter: `{{ value | toml }}` quotes a string for a TOML file."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.filters["toml"] = toml_string


# What a candidate interpreter prints, so a python3.X that is another version (an alias, a pyenv
# shim answering for the wrong one) is taken for what it is.
_PRINT_VERSION = "import sys; print('%d.%d' % sys.version_info[:2])"
_PROBE_TIMEOUT_S = 10


def pythons_on_path(commands: list[str], path: str | None = None) -> dict[str, str | None]:
    """The major.minor version of each command as found on `path` (default: PATH), None for one
    that is missing or does not run. The interpreters start at once: each takes 0.1 s or more
    (a pyenv shim), and a bake probes four."""
    probes: dict[str, subprocess.Popen[str]] = {}
    for command in commands:
        executable = shutil.which(command, path=path)
        if executable is None:
            continue
        with contextlib.suppress(OSError):
            probes[command] = subprocess.Popen(
                [executable, "-c", _PRINT_VERSION],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
    versions: dict[str, str | None] = dict.fromkeys(commands)
    for command, probe in probes.items():
        try:
            printed, _ = probe.communicate(timeout=_PROBE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            probe.kill()
            probe.communicate()
            continue
        if probe.returncode == 0:
            versions[command] = printed.strip()
    return versions


def version_key(version: str) -> tuple[int, ...]:
    """'3.12' as (3, 12), which compares as versions do."""
    return tuple(map(int, version.split(".")))


def newest_python(supported: list[str]) -> str:
    """The newest supported version that runs here as python3.X or python3, as the baked
    Makefile looks for them; the newest supported one when none does (uv can install it)."""
    return _newest_on(tuple(supported), os.environ.get("PATH", os.defpath))


# Once per PATH in a process: one process may bake many times.
@functools.cache
def _newest_on(supported: tuple[str, ...], path: str) -> str:
    newest_first = sorted(supported, key=version_key, reverse=True)
    found = pythons_on_path(["python3", *(f"python{version}" for version in newest_first)], path)
    for version in newest_first:
        if version in (found["python3"], found[f"python{version}"]):
            return version
    return newest_first[0]


class PythonVersionExtension(Extension):
    """Add the `newest_python(versions)` global, which cookiecutter.json's python_version
    default calls: a bake asks by default for a Python its machine has."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.globals["newest_python"] = newest_python


def _without_hook_traceback(record: logging.LogRecord) -> bool:
    """Keep a failed hook's log record to its message: the traceback is cookiecutter's own."""
    if record.exc_info is not None and isinstance(record.exc_info[1], FailedHookException):
        record.exc_info = None
    return True


class QuietHookFailures(Extension):
    """Add no Jinja syntax: keep cookiecutter from printing a traceback when a hook fails.

    A hook that refuses an answer prints one line saying why and exits 1; cookiecutter then logs
    "Stopping generation because ..." with the traceback of its own FailedHookException, a dozen
    lines of its internals. Cookiecutter loads `_extensions` into its own process before it runs
    any hook, which makes this the one place a template can shorten that record.
    """

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        # A logger ignores a filter it already has, so each new environment adds none.
        logging.getLogger("cookiecutter.hooks").addFilter(_without_hook_traceback)
