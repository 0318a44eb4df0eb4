"""Bakes with every answer of every choice, and with awkward answers, yield a clean, lint-free
project holding exactly the files its answers call for."""

import itertools
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from datetime import UTC, date, datetime
from fnmatch import fnmatch
from pathlib import Path

import pytest
from packaging.licenses import canonicalize_license_expression

from tests.conftest import TEMPLATE_CONTEXT, baked_metadata, expected_metadata

LONG_NAME = " ".join(["Realtime Collaborative Messaging Service"] * 5)
# Every question with a fixed set of answers; private keys (`_extensions`, ...) are not questions.
# Every answer a question offers: its choices, or for python_version, typed in, the supported ones.
CHOICES: dict[str, list[str]] = {
    key: value
    for key, value in TEMPLATE_CONTEXT.items()
    if isinstance(value, list) and not key.startswith("_")
} | {"python_version": TEMPLATE_CONTEXT["_python_versions"]}
CONTEXTS: dict[str, dict[str, str]] = {
    "defaults": {},
    **{
        f"{option}-{answer}": {option: answer}
        for option, answers in CHOICES.items()
        for answer in answers
    },
    "apostrophes": {
        "project_name": "O'Brien's Chat",
        "description": "It's the 'best' chat, isn't it?",
        "author_name": "Seán O'Brien",
    },
    "double-quotes": {
        "project_name": 'The "Quoted" Service',
        "description": 'Say "hi" and """ and """"',
        "author_name": 'Dwayne "The Rock" Johnson',
    },
    "backslashes": {
        "project_name": "Back\\slash Chat",
        "description": "C:\\path\\to\\chat \\n is not a newline, \\u0041 is not A\\",
        "author_name": "Back\\Slash",
    },
    # Cookiecutter drops one trailing newline from every answer, so none is put at the end.
    "newline-and-tab": {"description": "First line.\nSecond line,\tafter a tab."},
    "non-ascii": {
        "project_name": "Zoë Ærøskøbing 日本語",
        "description": "Zoë Ærøskøbing 日本語 — ünïcödé",
        "author_name": "Zoë Ærøskøbing 日本語",
    },
    "emoji": {
        "project_name": "Rocket 🚀 Chat",
        "description": "Ships fast 🚀🔥 with astral 𝄞",
        "author_name": "🦄 Team",
    },
    "long-name": {"project_name": LONG_NAME},
    # The longest slug the hook accepts: generated lines must still fit ruff's line length.
    "longest-slug": {"project_slug": "realtime-collaborative-messaging-service-for-teams"},
}


@pytest.fixture(params=list(CONTEXTS.values()), ids=list(CONTEXTS))
def context(request: pytest.FixtureRequest) -> dict[str, str]:
    """Answers for one bake, on top of the template's defaults."""
    return request.param


@pytest.fixture
def project_dir(bake: Callable[..., Path], context: dict[str, str]) -> Path:
    """The project baked from `context`, shared by all tests of that context."""
    return bake(**context)


def text_files(project_dir: Path) -> list[tuple[Path, str]]:
    """Return every UTF-8 text file of the project with its content."""
    files = []
    for path in sorted(project_dir.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue
        try:
            files.append((path, data.decode("utf-8")))
        except UnicodeDecodeError:
            continue
    return files


def test_default_names(bake: Callable[..., Path]) -> None:
    project_dir = bake()
    assert project_dir.name == "chat-service"
    assert (project_dir / "src" / "chat_service").is_dir()


def test_long_name_bakes_a_short_slug(bake: Callable[..., Path]) -> None:
    assert len(LONG_NAME) > 200
    assert bake(project_name=LONG_NAME).name == "realtime-collaborative-messaging-service"


def test_package_is_the_slug_with_underscores(project_dir: Path) -> None:
    assert (project_dir / "src" / project_dir.name.replace("-", "_")).is_dir()


# GitHub Actions' own `${{ expression }}` syntax, which workflow files must keep.
GITHUB_EXPRESSION = re.compile(r"\$\{\{[^{}]*\}\}")


def unrendered_jinja(relative: Path, text: str) -> bool:
    """Whether a baked file still holds Jinja syntax that is not meant to be there."""
    if relative.parts[:2] == (".github", "workflows"):
        text = GITHUB_EXPRESSION.sub("", text)
    return "{{" in text or "{%" in text


def test_no_jinja_left_unrendered(project_dir: Path) -> None:
    # Files cookiecutter copies without rendering are data (test ids, Prometheus templates may
    # hold braces); cookiecutter matches their patterns with fnmatch.
    verbatim = TEMPLATE_CONTEXT["_copy_without_render"]
    leftovers = [
        str(relative)
        for path, text in text_files(project_dir)
        if not any(fnmatch(str(relative := path.relative_to(project_dir)), p) for p in verbatim)
        and unrendered_jinja(relative, text)
    ]
    assert leftovers == []


@pytest.mark.parametrize(
    ("relative", "text", "expected"),
    [
        (".github/workflows/ci.yml", "group: ${{ matrix.group }}", False),
        (".github/workflows/ci.yml", "python-version: {{ cookiecutter.python_version }}", True),
        (".github/workflows/ci.yml", "${{ a }} {% raw %}", True),
        (".github/dependabot.yml", "x: ${{ matrix.group }}", True),
        ("README.md", "${{ matrix.group }}", True),
        ("Makefile", "$(BIN)/python -m pytest", False),
    ],
)
def test_unrendered_jinja_spares_only_github_expressions_in_workflows(
    relative: str, text: str, expected: bool
) -> None:
    assert unrendered_jinja(Path(relative), text) is expected


# The files and directories only some answers bake, written out here rather than taken from the
# template's conditional file names, so that a name with the wrong condition shows up.
OPTION_FILES: dict[tuple[str, str], set[str]] = {
    ("ci", "github"): {
        ".github",
        ".github/workflows",
        ".github/workflows/ci.yml",
        ".github/dependabot.yml",
    },
    ("ci", "gitlab"): {".gitlab-ci.yml", "renovate.json"},
    ("docker", "yes"): {"Dockerfile", ".dockerignore", "docker-compose.yml"},
    ("tracing", "otel"): {"src/chat_service/tracing.py", "tests/test_tracing.py"},
}
OPTIONS = sorted({option for option, _answer in OPTION_FILES})


@pytest.mark.parametrize(
    "answers",
    [
        dict(zip(OPTIONS, combination, strict=True))
        for combination in itertools.product(*(CHOICES[option] for option in OPTIONS))
    ],
    ids=lambda answers: "-".join(answers.values()),
)
def test_bake_holds_exactly_the_files_of_the_chosen_answers(
    bake: Callable[..., Path], answers: dict[str, str]
) -> None:
    project_dir = bake(**answers)
    baked = {str(path.relative_to(project_dir)) for path in project_dir.rglob("*")}
    optional = set().union(*OPTION_FILES.values())
    chosen = set().union(*(OPTION_FILES.get(choice, set()) for choice in answers.items()))
    assert baked & optional == chosen


def test_only_an_otel_bake_mentions_opentelemetry(bake: Callable[..., Path]) -> None:
    def mentions(project_dir: Path) -> list[str]:
        return [
            str(path.relative_to(project_dir))
            for path, text in text_files(project_dir)
            if re.search("opentelemetry|traceparent", text, re.IGNORECASE)
        ]

    assert mentions(bake(tracing="none")) == []
    assert "src/chat_service/tracing.py" in mentions(bake(tracing="otel"))


def test_python_files_compile(project_dir: Path) -> None:
    sources = sorted(project_dir.rglob("*.py"))
    assert sources
    for path in sources:
        compile(path.read_text(encoding="utf-8"), str(path), "exec")


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=" ".join)
def test_ruff_passes(project_dir: Path, command: list[str]) -> None:
    # No cache: the baked project is shared with other tests that read every file in it.
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *command, "--no-cache", "."],
        cwd=project_dir,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("tracing", CHOICES["tracing"])
def test_mypy_passes(bake: Callable[..., Path], tracing: str, mypy_cache: Path) -> None:
    # One run per tracing answer, the only one that changes the Python; the files and strictness
    # are the baked pyproject's. The cache is the session's, not in the shared bake.
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(mypy_cache)],
        cwd=bake(tracing=tracing),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout


def test_metadata_round_trips(project_dir: Path, context: dict[str, str]) -> None:
    assert baked_metadata(project_dir) == expected_metadata(project_dir, **context)


def test_readme_opens_with_the_description_once(bake: Callable[..., Path]) -> None:
    readme = (bake() / "README.md").read_text(encoding="utf-8")
    opening = " ".join(readme.split("\n## ", 1)[0].split())
    # Without its full stop, so that a paragraph which begins with it counts too.
    description = TEMPLATE_CONTEXT["description"].rstrip(".")
    assert opening.count(description) == 1, opening


def written_on(path: Path) -> date:
    """The day (UTC) a bake wrote the file: the one its dates must name, which a check after
    midnight in a session that baked before it would not."""
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).date()


# How each license answer's LICENSE begins, and the SPDX expression pyproject states for it.
LICENSES = {
    "MIT": ("MIT License", "MIT"),
    "Apache-2.0": ("Apache License", "Apache-2.0"),
    "BSD-3-Clause": ("BSD 3-Clause License", "BSD-3-Clause"),
    "Proprietary": (
        "Copyright (c) {year} {author}. All rights reserved.",
        "LicenseRef-Proprietary",
    ),
}


@pytest.mark.parametrize("answer", CHOICES["license"])
def test_license_file_and_pyproject_agree(bake: Callable[..., Path], answer: str) -> None:
    project_dir = bake(license=answer, author_name="Zoë's Team")
    heading, expression = LICENSES[answer]
    text = (project_dir / "LICENSE").read_text(encoding="utf-8")
    year = written_on(project_dir / "LICENSE").year
    assert text.strip().splitlines()[0].strip() == heading.format(year=year, author="Zoë's Team")
    if answer != "Apache-2.0":
        # Apache's text names no holder: it stays verbatim, as tools that recognise it expect.
        assert f"{year}" in text and "Zoë's Team" in text
    project = tomllib.loads((project_dir / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == canonicalize_license_expression(expression) == expression
    assert project["license-files"] == ["LICENSE"]
    private = "Private :: Do Not Upload" in project.get("classifiers", [])
    assert private is (answer == "Proprietary")


def test_changelog_opens_with_the_baked_version(bake: Callable[..., Path]) -> None:
    project_dir = bake()
    changelog = (project_dir / "CHANGELOG.md").read_text(encoding="utf-8")
    version = tomllib.loads((project_dir / "pyproject.toml").read_text(encoding="utf-8"))[
        "project"
    ]["version"]
    assert "https://keepachangelog.com/en/1.1.0/" in changelog
    sections = re.findall(r"^## (.+)$", changelog, flags=re.MULTILINE)
    written = written_on(project_dir / "CHANGELOG.md").isoformat()
    assert sections == ["[Unreleased]", f"[{version}] - {written}"]
