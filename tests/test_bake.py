"""Bakes with every Python version and with awkward answers yield a clean, lint-free project."""

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import TEMPLATE_CONTEXT, baked_metadata, expected_metadata

LONG_NAME = " ".join(["Realtime Collaborative Messaging Service"] * 5)
CONTEXTS: dict[str, dict[str, str]] = {
    "defaults": {},
    **{
        f"python-{version}": {"python_version": version}
        for version in TEMPLATE_CONTEXT["python_version"]
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


def test_no_jinja_left_unrendered(project_dir: Path) -> None:
    leftovers = [
        str(path.relative_to(project_dir))
        for path, text in text_files(project_dir)
        if "{{" in text or "{%" in text
    ]
    assert leftovers == []


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


def test_metadata_round_trips(project_dir: Path, context: dict[str, str]) -> None:
    assert baked_metadata(project_dir) == expected_metadata(project_dir, **context)
