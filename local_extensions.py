"""Jinja extensions that cookiecutter.json loads through `_extensions`."""

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
