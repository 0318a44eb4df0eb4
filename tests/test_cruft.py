"""Projects baked with cruft from a git checkout of the template, then kept up to date with it."""

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import TEMPLATE_DIR, bake_into
from tests.generated_runs import run_make

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


def cruft_create(run: Run, template: Path, output: Path, config: Path, **answers: str) -> Path:
    """`cruft create` a project from `template` into `output`, then commit it to a new repo."""
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
            str(config),
            *extra,
            cwd=output.parent,
        )
    )
    [project] = output.iterdir()
    succeeds(run("git", "init", "--quiet", cwd=project))
    commit_all(run, project, "Bake")
    return project


@pytest.fixture
def create(
    tmp_path: Path, run: Run, template: Path, cookiecutter_config: Path
) -> Callable[..., Path]:
    """Return `create(**answers) -> project`: `cruft create` it, then commit it to a new repo."""

    def create_project(**answers: str) -> Path:
        return cruft_create(run, template, tmp_path / "projects", cookiecutter_config, **answers)

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


# Template updates across a change of the extensions, and a team's own dependencies.

# The loader cookiecutter.json's _extensions names, as every commit since it has it: a process
# that renders two commits keeps the first one's copy, so its text must never change.
LOADER = TEMPLATE_DIR / "template_extensions.py"
LOADER_SHA256 = "7bc89a5e29117e75a4a932d3c5207af2aab02fcba955029f87b6f6bea7b51cd2"
# A commit from before the loader (2026-11-26): python_version was a choice, and _extensions
# named local_extensions itself, which had no PythonVersionExtension yet.
OLD_TEMPLATE_COMMIT = "a7af9b2"
UV = Path(sysconfig.get_path("scripts")) / "uv"
# The update steps of the baked README, after `cruft update --skip-apply-ask`.
AFTER_UPDATE = ["git checkout HEAD -- uv.lock", "make lock", "make test"]


def test_the_extensions_loader_is_never_edited() -> None:
    # Edit local_extensions.py instead: the loader finds whatever it holds at each render.
    assert hashlib.sha256(LOADER.read_bytes()).hexdigest() == LOADER_SHA256


def replace_with_this_checkout(run: Run, repo: Path) -> None:
    """Commit this checkout's template over whatever `repo` holds."""
    for entry in repo.iterdir():
        if entry.name != ".git":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    shutil.copytree(TEMPLATE_DIR, repo, ignore=NOT_TEMPLATE, dirs_exist_ok=True)
    commit_all(run, repo, "The template as this checkout has it")


@pytest.fixture
def old_template(tmp_path: Path, run: Run) -> Path:
    """A git repository holding the template at OLD_TEMPLATE_COMMIT."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", OLD_TEMPLATE_COMMIT],
        cwd=TEMPLATE_DIR,
        capture_output=True,
        timeout=GIT_TIMEOUT_S,
        check=False,
    )
    if archive.returncode != 0:
        pytest.skip(
            f"this checkout's history does not reach {OLD_TEMPLATE_COMMIT}: a shallow clone?"
        )
    repo = tmp_path / "old-template"
    repo.mkdir()
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(repo, filter="data")
    succeeds(run("git", "init", "--quiet", cwd=repo))
    commit_all(run, repo, "The template in November")
    return repo


def test_a_project_baked_before_the_extensions_changed_updates_keeping_its_own_dependency(
    tmp_path: Path, run: Run, old_template: Path, cookiecutter_config: Path
) -> None:
    project = cruft_create(
        run, old_template, tmp_path / "projects", cookiecutter_config, python_version="3.11"
    )
    # The team's own change, as a team makes it.
    succeeds(run(str(UV), "add", "--quiet", "orjson", cwd=project))
    commit_all(run, project, "Add orjson")
    replace_with_this_checkout(run, old_template)

    succeeds(run("cruft", "update", "--skip-apply-ask", cwd=project))
    readme = (project / "README.md").read_text(encoding="utf-8")
    assert all(f"\n{step} " in readme for step in ["cruft update --skip-apply-ask", *AFTER_UPDATE])
    succeeds(run("git", "checkout", "HEAD", "--", "uv.lock", cwd=project))
    locked = run_make(project, "lock", UV=str(UV), timeout=300)
    assert locked.returncode == 0, locked.stdout + locked.stderr

    status = succeeds(run("git", "status", "--porcelain", "--untracked-files=all", cwd=project))
    assert [line for line in status.splitlines() if line[:2] in ("UU", "AA", "DU", "UD")] == []
    markers = run("git", "grep", "--untracked", "-n", "-E", "^(<<<<<<<|>>>>>>>) ", cwd=project)
    assert markers.returncode == 1, markers.stdout
    assert list(project.rglob("*.rej")) == []
    state = json.loads((project / ".cruft.json").read_text(encoding="utf-8"))
    assert state["commit"] == head(run, old_template)
    succeeds(run(str(UV), "lock", "--check", cwd=project))
    # The team's dependency kept, beside the template's newer ones (pytest-cov came later).
    lock = (project / "uv.lock").read_text(encoding="utf-8")
    assert 'name = "orjson"' in lock and 'name = "pytest-cov"' in lock
    assert '"orjson' in (project / "pyproject.toml").read_text(encoding="utf-8")
    tested = run_make(project, "test", UV=str(UV))
    assert tested.returncode == 0, tested.stdout[-3000:] + tested.stderr[-3000:]


def test_an_update_renders_with_the_extensions_of_the_newer_commit(
    create: Callable[..., Path], run: Run, template: Path
) -> None:
    project = create()
    # The next commit adds an extension and uses it: cruft renders the project's commit first,
    # in the same process, so the loader it imported then must find the new one.
    extensions = template / "local_extensions.py"
    extensions.write_text(
        extensions.read_text(encoding="utf-8")
        + """

class ShoutExtension(Extension):
    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.filters["shout"] = str.upper
""",
        encoding="utf-8",
    )
    config = json.loads((template / "cookiecutter.json").read_text(encoding="utf-8"))
    config["_extensions"].append("template_extensions.ShoutExtension")
    (template / "cookiecutter.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    change_template(run, template, {"Makefile": "# {{ cookiecutter.package_name | shout }}\n"})
    succeeds(run("cruft", "update", "--skip-apply-ask", cwd=project))
    assert (project / "Makefile").read_text(encoding="utf-8").endswith("\n# CHAT_SERVICE\n")


def test_an_update_leaves_uv_lock_to_make_lock(
    create: Callable[..., Path], run: Run, template: Path
) -> None:
    project = create()
    succeeds(run(str(UV), "add", "--quiet", "orjson", cwd=project))
    commit_all(run, project, "Add orjson")
    team_lock = (project / "uv.lock").read_text(encoding="utf-8")
    change_template(
        run, template, {"uv.lock": "# the template's lock moved\n", "Makefile": "# x\n"}
    )
    succeeds(run("cruft", "update", "--skip-apply-ask", cwd=project))
    # Skipped: the three-way merge of two resolutions is left to make lock.
    assert changed_files(run, project) == [".cruft.json", "Makefile"]
    assert (project / "uv.lock").read_text(encoding="utf-8") == team_lock
