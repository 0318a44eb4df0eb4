"""Bake the template into throwaway directories, through the API or through the CLI; give the
whole run Postgres and Redis."""

import contextlib
import functools
import json
import os
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cookiecutter.generate import generate_context
from cookiecutter.main import cookiecutter
from cookiecutter.prompt import prompt_for_config

from tests.pgbouncer import PgBouncer, pgbouncer_for_the_run
from tests.template_harness import harness_module

TEMPLATE_DIR = Path(__file__).resolve().parent.parent
TEMPLATE_CONTEXT: dict[str, Any] = json.loads(
    (TEMPLATE_DIR / "cookiecutter.json").read_text(encoding="utf-8")
)
# The answers a baked project echoes verbatim, as opposed to the derived slug and package.
DIRECT_ANSWERS = ("project_name", "description", "author_name", "author_email", "python_version")


@functools.cache
def default_answers() -> dict[str, Any]:
    """Return the answers a bake without input gets, as cookiecutter renders them here."""
    context = generate_context(context_file=str(TEMPLATE_DIR / "cookiecutter.json"))
    return dict(prompt_for_config(context, no_input=True))


def default_answer(key: str) -> str:
    """Return the template's default for an answer that is not derived from another one."""
    answer: str = default_answers()[key]
    return answer


def baked_metadata(project_dir: Path) -> dict[str, Any]:
    """Return what the baked project states about itself: README title and pyproject metadata."""
    readme = (project_dir / "README.md").read_text(encoding="utf-8")
    pyproject = tomllib.loads((project_dir / "pyproject.toml").read_text(encoding="utf-8"))
    project = pyproject["project"]
    return {
        "title": readme.splitlines()[0],
        "name": project["name"],
        "description": project["description"],
        "authors": project["authors"],
        "requires-python": project["requires-python"],
    }


def expected_metadata(project_dir: Path, **context: str) -> dict[str, Any]:
    """Return the baked_metadata that a bake with these answers over the defaults must have."""
    answers = {key: context.get(key, default_answer(key)) for key in DIRECT_ANSWERS}
    return {
        "title": f"# {answers['project_name']}",
        "name": project_dir.name,
        "description": answers["description"],
        "authors": [{"name": answers["author_name"], "email": answers["author_email"]}],
        "requires-python": f">={answers['python_version']}",
    }


def bake_into(output_dir: Path, config_file: Path, **context: str) -> Path:
    """Bake the template non-interactively into output_dir and return the project directory."""
    project_dir = cookiecutter(
        str(TEMPLATE_DIR),
        no_input=True,
        output_dir=str(output_dir),
        config_file=str(config_file),
        extra_context=context,
    )
    return Path(project_dir)


SERVICES = pytest.StashKey[dict[str, str]]()


def pytest_configure(config: pytest.Config) -> None:
    """Pick the run's Postgres and Redis as a baked project's harness does, throwaway servers
    where none answers; xdist workers and baked runs inherit them as TEST_DATABASE_URL and
    TEST_REDIS_URL."""
    if hasattr(config, "workerinput"):
        return
    services, embedded = harness_module("services"), harness_module("embedded")
    stack = contextlib.ExitStack()
    config.add_cleanup(stack.close)
    try:
        resolved = services.resolve(stack)
    except (services.ServiceUnreachable, embedded.EmbeddedUnavailable) as error:
        raise pytest.UsageError(str(error)) from None
    os.environ["TEST_DATABASE_URL"] = resolved.database_url
    os.environ["TEST_REDIS_URL"] = resolved.redis_url
    config.stash[SERVICES] = resolved.origin


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Which Postgres and Redis the run uses (said by the controller; verbose workers ask too)."""
    origin = config.stash.get(SERVICES, None)
    if origin is None:
        return []
    return ["services: " + ", ".join(f"{name} {where}" for name, where in origin.items())]


@pytest.fixture(scope="session", autouse=True)
def session_tmpdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point TMPDIR at this session's own temp dir, for this process and the ones it starts.

    Cookiecutter renders every hook into a temp file it never deletes (over a hundred a run);
    here they land under pytest's basetemp, which pytest prunes, instead of piling up in /tmp."""
    tmpdir = tmp_path_factory.mktemp("tmp")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(tmpdir))
        patch.setattr(tempfile, "tempdir", str(tmpdir))
        yield tmpdir


def run_wide_dir(tmp_path_factory: pytest.TempPathFactory, worker_id: str, name: str) -> Path:
    """A directory `name` that every worker of this run gets, in the run's own temp root."""
    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        root = root.parent
    shared = root / name
    shared.mkdir(exist_ok=True)
    return shared


@pytest.fixture(scope="session")
def pgbouncer() -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode in front of the run's Postgres, for the session."""
    with pgbouncer_for_the_run() as bouncer:
        yield bouncer


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """The URLs of the nodes of a throwaway 3-master Redis Cluster (no replicas), for the
    session; any one of them is a TEST_REDIS_URL for all of it."""
    embedded = harness_module("embedded")
    with embedded.embedded_cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster.urls


@pytest.fixture(scope="session")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """mypy's cache, shared by its runs on bakes across the workers: the first checks the
    third-party packages (7 s on a quiet machine), the others only what differs (about a
    second). mypy replaces each cache file atomically, so runs at once can share it."""
    return run_wide_dir(tmp_path_factory, worker_id, "mypy-cache")


@pytest.fixture(scope="session")
def cookiecutter_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Write a cookiecutter user config whose replay and clone dirs are private to this session."""
    # Keeps ~/.cookiecutterrc defaults out of the answers, and parallel workers out of each
    # other's replay files.
    home = tmp_path_factory.mktemp("cookiecutter-home")
    config_file = home / "config.yaml"
    config = {
        "cookiecutters_dir": str(home / "cookiecutters"),
        "replay_dir": str(home / "replay"),
    }
    # JSON is valid YAML.
    config_file.write_text(json.dumps(config), encoding="utf-8")
    return config_file


@pytest.fixture(scope="session")
def bake(
    tmp_path_factory: pytest.TempPathFactory, cookiecutter_config: Path
) -> Callable[..., Path]:
    """Return `bake(**context) -> project dir`; each context is baked once per session."""
    # Tests share the baked projects, so they must only read them.
    baked: dict[tuple[tuple[str, str], ...], Path] = {}

    def bake_once(**context: str) -> Path:
        key = tuple(sorted(context.items()))
        if key not in baked:
            output_dir = tmp_path_factory.mktemp("bake")
            baked[key] = bake_into(output_dir, cookiecutter_config, **context)
        return baked[key]

    return bake_once


@pytest.fixture
def cli(
    tmp_path: Path, cookiecutter_config: Path
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Return `cli(*args, **env)`: run the cookiecutter CLI on the template into
    `tmp_path / "out"`, with `env` over this process's environment."""
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    command = [
        sys.executable,
        "-m",
        "cookiecutter",
        str(TEMPLATE_DIR),
        "--output-dir",
        str(output_dir),
        "--config-file",
        str(cookiecutter_config),
    ]
    # UTF-8 mode makes the child's stderr decodable whatever the locale.
    env = {**os.environ, "PYTHONUTF8": "1"}

    def run(*args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *args],
            # A prompt that should not happen fails on end of input instead of hanging.
            stdin=subprocess.DEVNULL,
            capture_output=True,
            encoding="utf-8",
            env={**env, **extra_env},
            timeout=300,
            check=False,
        )

    return run


@pytest.fixture
def cli_fails(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> Callable[..., str]:
    """Return `cli_fails(*args) -> stderr`: run the CLI, assert it failed and left nothing."""

    def run(*args: str) -> str:
        result = cli(*args)
        assert result.returncode != 0, result.stdout
        # Looking at tmp_path, not just the output dir, also catches slugs like '../escape'.
        assert [path.name for path in tmp_path.rglob("*")] == ["out"]
        return result.stderr

    return run


@pytest.fixture
def bake_fails(cli_fails: Callable[..., str]) -> Callable[..., str]:
    """Return `bake_fails(**context) -> stderr` for a non-interactive CLI bake that must fail."""

    def run(**context: str) -> str:
        return cli_fails("--no-input", *(f"{key}={value}" for key, value in context.items()))

    return run
