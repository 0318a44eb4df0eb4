"""Projects baked with cruft from a git checkout of the template, then kept up to date with it."""

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import TEMPLATE_DIR, bake_into

PROJECT_TEMPLATE = "{{cookiecutter.project_slug}}"
# Local state of this checkout that a clone of the template would not have.
NOT_TEMPLATE = shutil.ignore_patterns(
    ".git", ".venv", "build", "__pycache__", ".pytest_cache", ".ruff_cache", "node_modules"
)
GIT_TIMEOUT_S = 60
CRUFT_TIMEOUT_S = 300

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run(tmp_path: Path, cookiecutter_config: Path) -> Run:
    """Return `run(*command, cwd=...)`: run git or cruft with a private, fixed configuration."""
    env = {
        **os.environ,
        # cruft update reads no --config-file; this keeps ~/.cookiecutterrc out of its renders.
        "COOKIECUTTER_CONFIG": str(cookiecutter_config),
        # No user or system git config (signing, hooks, default branch) changes the outcome.
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Template Tests",
        "GIT_AUTHOR_EMAIL": "tests@example.com",
        "GIT_COMMITTER_NAME": "Template Tests",
        "GIT_COMMITTER_EMAIL": "tests@example.com",
        "PYTHONUTF8": "1",
    }

    def run_command(*command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        timeout = CRUFT_TIMEOUT_S if command[0] == "cruft" else GIT_TIMEOUT_S
        if command[0] == "cruft":
            command = (sys.executable, "-m", *command)
        return subprocess.run(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run_command


def succeeds(result: subprocess.CompletedProcess[str]) -> str:
    """Assert a command succeeded; return its standard output."""
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def commit_all(run: Run, repo: Path, message: str) -> None:
    """Stage every change in `repo` and commit it."""
    succeeds(run("git", "add", "--all", cwd=repo))
    succeeds(run("git", "commit", "--quiet", "--message", message, cwd=repo))


def head(run: Run, repo: Path) -> str:
    """The commit `repo` is at."""
    return succeeds(run("git", "rev-parse", "HEAD", cwd=repo)).strip()


def changed_files(run: Run, repo: Path) -> list[str]:
    """Paths that differ from the last commit, untracked ones included."""
    status = succeeds(run("git", "status", "--porcelain", "--untracked-files=all", cwd=repo))
    return sorted(line[3:] for line in status.splitlines())


@pytest.fixture
def template(tmp_path: Path, run: Run) -> Path:
    """A git repository holding this checkout's template, as teams would clone it."""
    repo = tmp_path / "template"
    shutil.copytree(TEMPLATE_DIR, repo, ignore=NOT_TEMPLATE)
    succeeds(run("git", "init", "--quiet", cwd=repo))
    commit_all(run, repo, "Template")
    return repo


@pytest.fixture
def create(
    tmp_path: Path, run: Run, template: Path, cookiecutter_config: Path
) -> Callable[..., Path]:
    """Return `create(**answers) -> project`: `cruft create` it, then commit it to a new repo."""

    def create_project(**answers: str) -> Path:
        output = tmp_path / "projects"
        extra = ["--extra-context", json.dumps(answers)] if answers else []
        succeeds(
            run(
                "cruft",
                "create",
                str(template),
                "--no-input",
                "--output-dir",
                str(output),
                "--config-file",
                str(cookiecutter_config),
                *extra,
                cwd=tmp_path,
            )
        )
        [project] = output.iterdir()
        succeeds(run("git", "init", "--quiet", cwd=project))
        commit_all(run, project, "Bake")
        return project

    return create_project


def change_template(run: Run, template: Path, edits: dict[str, str]) -> None:
    """Append `edits[path]` to each file of the project template and commit."""
    for path, addition in edits.items():
        target = template / PROJECT_TEMPLATE / path
        target.write_text(target.read_text(encoding="utf-8") + addition, encoding="utf-8")
    commit_all(run, template, "Change the template")


def test_cruft_create_records_the_template_commit_and_answers(
    create: Callable[..., Path], run: Run, template: Path
) -> None:
    project = create(ci="gitlab")
    state = json.loads((project / ".cruft.json").read_text(encoding="utf-8"))
    assert state["template"] == str(template)
    assert state["commit"] == head(run, template)
    assert state["context"]["cookiecutter"]["ci"] == "gitlab"
    assert (project / ".gitlab-ci.yml").is_file()
    assert not (project / ".github").exists()
    succeeds(run("cruft", "check", cwd=project))


def test_plain_cookiecutter_bake_joins_cruft_through_link(
    tmp_path: Path, run: Run, template: Path, cookiecutter_config: Path
) -> None:
    # What the READMEs tell a team that baked with plain cookiecutter.
    project = bake_into(tmp_path / "projects", cookiecutter_config, ci="gitlab")
    succeeds(run("git", "init", "--quiet", cwd=project))
    commit_all(run, project, "Bake")
    unlinked = run("cruft", "check", cwd=project)
    assert unlinked.returncode == 1
    assert "NoCruftFound" in unlinked.stdout + unlinked.stderr
    succeeds(
        run(
            "cruft",
            "link",
            str(template),
            "--no-input",
            "--config-file",
            str(cookiecutter_config),
            # The answers it was baked with; left out, they would be the defaults.
            "--extra-context",
            json.dumps({"ci": "gitlab"}),
            cwd=project,
        )
    )
    state = json.loads((project / ".cruft.json").read_text(encoding="utf-8"))
    assert state["commit"] == head(run, template)
    assert state["context"]["cookiecutter"]["ci"] == "gitlab"
    succeeds(run("cruft", "check", cwd=project))
    # Linked at the commit it was baked from, an update finds nothing to change.
    commit_all(run, project, "Link to the template")
    succeeds(run("cruft", "update", "--skip-apply-ask", cwd=project))
    assert changed_files(run, project) == []


def test_cruft_update_brings_a_template_change_in_cleanly(
    create: Callable[..., Path], run: Run, template: Path
) -> None:
    project = create()
    # Rendered on update with the project's own answers.
    change_template(run, template, {"Makefile": "# {{ cookiecutter.package_name }} was updated\n"})
    behind = run("cruft", "check", cwd=project)
    assert behind.returncode == 1, behind.stdout + behind.stderr
    assert "out of date" in behind.stdout
    succeeds(run("cruft", "update", "--skip-apply-ask", cwd=project))
    makefile = (project / "Makefile").read_text(encoding="utf-8")
    assert makefile.endswith("\n# chat_service was updated\n")
    # The change and the new commit in .cruft.json, and nothing else: no conflicts, no rejects.
    assert changed_files(run, project) == [".cruft.json", "Makefile"]
    state = json.loads((project / ".cruft.json").read_text(encoding="utf-8"))
    assert state["commit"] == head(run, template)
    succeeds(run("cruft", "check", cwd=project))


def test_cruft_update_leaves_the_teams_own_files_at_the_paths_of_unchosen_answers(
    create: Callable[..., Path], run: Run, template: Path
) -> None:
    project = create(ci="none", docker="no")
    # The team brings its own files at the paths of the options it did not choose.
    own = {
        ".gitlab-ci.yml": "# our own pipeline\n",
        "Dockerfile": "FROM scratch\n",
        ".github/workflows/ours.yml": "name: ours\n",
    }
    for path, content in own.items():
        (project / path).parent.mkdir(parents=True, exist_ok=True)
        (project / path).write_text(content, encoding="utf-8")
    commit_all(run, project, "Our own CI and image")
    change_template(
        run,
        template,
        {
            "{% if cookiecutter.ci == 'gitlab' %}.gitlab-ci.yml{% endif %}": "# template change\n",
            "{% if cookiecutter.docker == 'yes' %}Dockerfile{% endif %}": "# template change\n",
        },
    )
    succeeds(run("cruft", "update", "--skip-apply-ask", cwd=project))
    # Neither render cruft diffed holds those paths, so the update has nothing to say about them.
    assert {path: (project / path).read_text(encoding="utf-8") for path in own} == own
    assert changed_files(run, project) == [".cruft.json"]
    succeeds(run("cruft", "check", cwd=project))


def test_cruft_update_can_change_an_answer(create: Callable[..., Path], run: Run) -> None:
    project = create()
    assert (project / ".github" / "workflows" / "ci.yml").is_file()
    succeeds(
        run(
            "cruft",
            "update",
            "--skip-apply-ask",
            "--variables-to-update",
            json.dumps({"ci": "gitlab", "docker": "no"}),
            cwd=project,
        )
    )
    assert changed_files(run, project) == [
        ".cruft.json",
        ".dockerignore",
        ".github/dependabot.yml",
        ".github/workflows/ci.yml",
        ".gitlab-ci.yml",
        "Dockerfile",
        "README.md",
        "docker-compose.yml",
        "renovate.json",
    ]
    assert (project / ".gitlab-ci.yml").is_file()
    assert not (project / ".github").exists()
    assert not (project / "Dockerfile").exists()
    assert "## Running in containers" not in (project / "README.md").read_text(encoding="utf-8")


def test_conflicting_update_reports_success_and_leaves_the_conflict_to_git(
    create: Callable[..., Path], run: Run, template: Path
) -> None:
    # What the READMEs warn about: cruft's exit status does not tell a conflict apart.
    project = create()
    makefile = project / "Makefile"
    makefile.write_text(makefile.read_text(encoding="utf-8") + "# ours\n", encoding="utf-8")
    commit_all(run, project, "Our Makefile")
    change_template(run, template, {"Makefile": "# theirs\n"})
    succeeds(run("cruft", "update", "--skip-apply-ask", cwd=project))
    status = succeeds(run("git", "status", "--porcelain", cwd=project))
    assert "UU Makefile" in status.splitlines()
    assert "<<<<<<<" in makefile.read_text(encoding="utf-8")
