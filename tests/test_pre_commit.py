"""A bake's `make lint`: the hooks of its .pre-commit-config.yaml, which pass on a fresh bake and
catch what they are there for."""

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import run_wide_dir
from tests.generated_runs import clean_environment, installed_copy

# The tools of the baked project's .venv that `make lint` runs, taken from this environment.
VENV_TOOLS = ("python", "ruff", "mypy", "pre-commit")
# Installing the pre-commit-hooks environment from PyPI takes a while, the first time.
LINT_TIMEOUT_S = 300


@pytest.fixture(scope="session")
def pre_commit_home(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """Where pre-commit keeps the hook environments, shared across the workers: pre-commit
    installs them under a lock, once."""
    return run_wide_dir(tmp_path_factory, worker_id, "pre-commit-home")


def git(project: Path, *args: str) -> None:
    """Run git in the project with no user or system configuration."""
    subprocess.run(
        ["git", *args],
        cwd=project,
        env={**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"},
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.fixture
def unversioned_project(bake: Callable[..., Path], tmp_path: Path) -> Path:
    """A fresh bake of the defaults, not yet a git repository, whose .venv and .tools hold this
    environment's tools, installed as far as its Makefile can tell."""
    return installed_copy(bake(), tmp_path / "project", VENV_TOOLS)


@pytest.fixture
def project(unversioned_project: Path) -> Path:
    """That bake in a new git repository, everything staged."""
    git(unversioned_project, "init", "--quiet")
    git(unversioned_project, "add", "--all")
    return unversioned_project


def make_lint(
    project: Path, pre_commit_home: Path, mypy_cache: Path
) -> subprocess.CompletedProcess[str]:
    """Run the project's `make lint` to completion."""
    return subprocess.run(
        ["make", "lint"],
        cwd=project,
        env=clean_environment(PRE_COMMIT_HOME=str(pre_commit_home), MYPY_CACHE_DIR=str(mypy_cache)),
        capture_output=True,
        text=True,
        timeout=LINT_TIMEOUT_S,
        check=False,
    )


def test_make_lint_passes_on_a_fresh_bake_and_changes_nothing(
    project: Path, pre_commit_home: Path, mypy_cache: Path
) -> None:
    result = make_lint(project, pre_commit_home, mypy_cache)
    assert result.returncode == 0, result.stdout + result.stderr
    hooks = ("ruff check", "ruff format", "mypy", "no conflict markers", "no trailing whitespace")
    for hook in hooks:
        assert any(line.startswith(hook) for line in result.stdout.splitlines()), hook
    # Every file was staged: the fixers left the working tree as it was.
    git(project, "diff", "--exit-code")


def test_make_lint_before_git_init_says_to_run_it(
    unversioned_project: Path, pre_commit_home: Path, mypy_cache: Path
) -> None:
    # tmp_path lies outside any repository, as a bake usually does.
    result = make_lint(unversioned_project, pre_commit_home, mypy_cache)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "git init && git add -A first" in output, output
    assert "git failed" not in output


def test_make_lint_in_a_directory_of_another_repository_says_to_run_git_init(
    unversioned_project: Path, pre_commit_home: Path, mypy_cache: Path
) -> None:
    # pre-commit would pass there, every hook skipped: the outer repository tracks none of the
    # bake's files.
    outer = unversioned_project.parent
    git(outer, "init", "--quiet")
    result = make_lint(unversioned_project, pre_commit_home, mypy_cache)
    assert result.returncode != 0
    assert "git init && git add -A first" in result.stdout + result.stderr


# What a hook must catch, written into a file of the bake (then staged): the hook's name, the
# file, the text appended to it, and what the output names.
CATCHES = {
    # The shape cruft update leaves behind when the template and the team changed the same lines.
    "conflict-markers": (
        "no conflict markers",
        "README.md",
        "<<<<<<< before updating\nours\n=======\ntheirs\n>>>>>>> after updating\n",
        "README.md:",
    ),
    "trailing-whitespace": ("no trailing whitespace", ".env.example", "# x \n", ".env.example"),
    "missing-final-newline": ("files end in one newline", "CHANGELOG.md", "- no newline", ""),
    "unformatted-python": ("ruff format", "loadtest/flood.py", "x = {  'a':1 }\n", "flood.py"),
    "lint-error": ("ruff check", "loadtest/flood.py", "import os\n", "F401"),
    "type-error": ("mypy", "loadtest/flood.py", 'runs: int = "three"\n', "flood.py"),
}


@pytest.mark.parametrize(("hook", "path", "addition", "named"), CATCHES.values(), ids=CATCHES)
def test_make_lint_fails_on_what_a_hook_is_there_for(
    project: Path,
    pre_commit_home: Path,
    mypy_cache: Path,
    hook: str,
    path: str,
    addition: str,
    named: str,
) -> None:
    target = project / path
    target.write_text(target.read_text(encoding="utf-8") + addition, encoding="utf-8")
    git(project, "add", path)
    result = make_lint(project, pre_commit_home, mypy_cache)
    assert result.returncode != 0
    failed = [line for line in result.stdout.splitlines() if line.endswith("Failed")]
    assert [line.split(".")[0] for line in failed] == [hook]
    assert named in result.stdout
