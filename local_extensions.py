"""Jinja extensions that cookiecutter.json loads through `_extensions`."""

import logging

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
