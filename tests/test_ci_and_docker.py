"""The CI, Dependabot and Docker files of a bake, checked without a CI service or Docker engine:
they match the official schemas, the Dockerfile passes hadolint, and they name the services,
commands and variables the project's Makefile and code expect."""

import json
import os
import re
import shlex
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest
import yaml
from check_jsonschema.cli.main_command import main as check_jsonschema_cli
from click.testing import CliRunner, Result

from local_extensions import version_key
from tests.conftest import TEMPLATE_CONTEXT
from tests.generated_runs import run_make

PYTHON_VERSIONS: list[str] = TEMPLATE_CONTEXT["_python_versions"]
GITHUB_SHARD_ARGS = "--splits $SPLITS --group $GROUP --randomly-seed=$GITHUB_RUN_ID"
GITLAB_SHARD_ARGS = "--splits $SPLITS --group $GROUP --randomly-seed=$CI_PIPELINE_ID"


@pytest.fixture(scope="module")
def github(bake: Callable[..., Path]) -> Path:
    """A bake with GitHub Actions (and Docker, the default)."""
    return bake(ci="github")


@pytest.fixture(scope="module")
def gitlab(bake: Callable[..., Path]) -> Path:
    """A bake with GitLab CI."""
    return bake(ci="gitlab")


def load_yaml(path: Path) -> Any:
    """Parse a YAML file safely, as the CI service or Compose would."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def make_variables(command: str) -> dict[str, str]:
    """The variables a `make test NAME=value ...` command line sets, as the shell passes them."""
    words = shlex.split(command)
    assert words[:2] == ["make", "test"], command
    return dict(word.split("=", 1) for word in words[2:])


def service_host_and_port(url: str) -> tuple[str | None, int | None]:
    """Where a database or Redis URL points."""
    parts = urlsplit(url)
    return parts.hostname, parts.port


def pinned(image: str) -> str:
    """An image as the CI files name it: its tag, then the digest the template records for it."""
    return f"{image}@{TEMPLATE_CONTEXT['_images'][image]}"


def supported_from(floor: str) -> list[str]:
    """Every Python the template supports, oldest first, from `floor` up: what CI tests on."""
    ordered = sorted(PYTHON_VERSIONS, key=version_key)
    return [version for version in ordered if version_key(version) >= version_key(floor)]


def test_the_supported_pythons_are_listed_oldest_first() -> None:
    # The CI matrices list them in this order.
    assert sorted(PYTHON_VERSIONS, key=version_key) == PYTHON_VERSIONS


def step_using(steps: list[dict[str, Any]], action: str) -> dict[str, Any]:
    """The one step of a GitHub job that uses `action` (any version)."""
    [step] = [step for step in steps if step.get("uses", "").startswith(f"{action}@")]
    return step


def test_github_workflow_runs_lint_and_every_shard_against_its_services(github: Path) -> None:
    workflow = load_yaml(github / ".github" / "workflows" / "ci.yml")
    # YAML 1.1 reads the key `on` as true.
    assert {"push", "pull_request"} <= set(workflow[True])
    lint, test = workflow["jobs"]["lint"], workflow["jobs"]["test"]
    assert lint["steps"][-1]["run"] == "make lint PYTHON=python"
    groups = test["strategy"]["matrix"]["group"]
    assert len(groups) >= 2
    assert groups == list(range(1, len(groups) + 1))
    assert test["strategy"]["matrix"]["splits"] == [len(groups)]
    assert test["strategy"]["fail-fast"] is False
    variables = make_variables(test["steps"][-1]["run"])
    assert variables == {"PYTHON": "python", "PYTEST_ARGS": GITHUB_SHARD_ARGS}
    # The matrix reaches the shell as variables, never pasted into its script.
    assert test["steps"][-1]["env"] == {
        "SPLITS": "${{ matrix.splits }}",
        "GROUP": "${{ matrix.group }}",
    }
    postgres, redis = test["services"]["postgres"], test["services"]["redis"]
    assert postgres["image"].startswith("postgres:")
    assert redis["image"].startswith("redis:")
    # The URLs carry no password, so the server must trust the runner.
    assert postgres["env"] == {"POSTGRES_HOST_AUTH_METHOD": "trust"}
    assert all("--health-cmd" in service["options"] for service in (postgres, redis))
    database = service_host_and_port(test["env"]["TEST_DATABASE_URL"])
    assert database == ("127.0.0.1", 5432)
    assert postgres["ports"] == [f"{database[1]}:5432"]
    cache = service_host_and_port(test["env"]["TEST_REDIS_URL"])
    assert cache == ("127.0.0.1", 6379)
    assert redis["ports"] == [f"{cache[1]}:6379"]


def test_github_coverage_job_runs_make_cov_whole_on_the_shards_services(github: Path) -> None:
    jobs = load_yaml(github / ".github" / "workflows" / "ci.yml")["jobs"]
    coverage, test = jobs["coverage"], jobs["test"]
    assert "strategy" not in coverage
    assert [step.get("run") for step in coverage["steps"]][-2:] == [
        "make cov PYTHON=python",
        '.venv/bin/coverage report --format=markdown >> "$GITHUB_STEP_SUMMARY"',
    ]
    assert (coverage["services"], coverage["env"]) == (test["services"], test["env"])


@pytest.mark.parametrize("version", PYTHON_VERSIONS)
def test_github_tests_on_every_python_from_the_answer_up_and_sets_up_uv_with_a_lock_keyed_cache(
    bake: Callable[..., Path], version: str
) -> None:
    workflow = load_yaml(bake(ci="github", python_version=version) / ".github/workflows/ci.yml")
    jobs = workflow["jobs"]
    # The suite on every supported Python from the answer up; lint and coverage on the answer.
    assert jobs["test"]["strategy"]["matrix"]["python"] == supported_from(version)
    for name, job in jobs.items():
        steps = job["steps"]
        assert step_using(steps, "actions/checkout")
        python = "${{ matrix.python }}" if name == "test" else version
        assert step_using(steps, "actions/setup-python")["with"] == {"python-version": python}
        assert step_using(steps, "astral-sh/setup-uv")["with"] == {
            "enable-cache": True,
            "cache-dependency-glob": "uv.lock",
        }


@pytest.mark.parametrize(
    ("docker", "ecosystems"),
    [("yes", ["docker", "github-actions", "uv"]), ("no", ["github-actions", "uv"])],
)
def test_dependabot_updates_the_lock_the_actions_and_the_base_images(
    bake: Callable[..., Path], docker: str, ecosystems: list[str]
) -> None:
    config = load_yaml(bake(ci="github", docker=docker) / ".github" / "dependabot.yml")
    assert config["version"] == 2
    updates = {update["package-ecosystem"]: update for update in config["updates"]}
    assert sorted(updates) == ecosystems
    assert all(update["directory"] == "/" for update in updates.values())
    assert all(update["schedule"]["interval"] for update in updates.values())


def test_renovate_updates_a_gitlab_bake_and_its_lock(gitlab: Path, github: Path) -> None:
    config = json.loads((gitlab / "renovate.json").read_text(encoding="utf-8"))
    # pinDigests: Renovate pins every image of the pipeline by digest, and keeps the pins current.
    assert config["extends"] == ["config:recommended", "docker:pinDigests"]
    assert config["lockFileMaintenance"] == {"enabled": True}
    assert not (github / "renovate.json").exists()


def test_gitlab_pipeline_runs_lint_and_parallel_shards_against_its_services(gitlab: Path) -> None:
    pipeline = load_yaml(gitlab / ".gitlab-ci.yml")
    lint, test = pipeline["lint"], pipeline[".test"]
    assert lint["script"] == ["make lint PYTHON=python"]
    [matrix] = test["parallel"]["matrix"]
    assert len(matrix["GROUP"]) >= 2
    assert matrix["GROUP"] == [str(group) for group in range(1, len(matrix["GROUP"]) + 1)]
    assert matrix["SPLITS"] == str(len(matrix["GROUP"]))
    assert make_variables(test["script"][-1]) == {
        "PYTHON": "python",
        "PYTEST_ARGS": GITLAB_SHARD_ARGS,
    }
    # A service is reached under its alias, which the URLs below name.
    hosts = {service["alias"]: service["name"] for service in test["services"]}
    assert sorted(hosts) == ["postgres", "redis"]
    assert all(image.startswith(f"{host}:") for host, image in hosts.items())
    variables = test["variables"]
    assert variables["POSTGRES_HOST_AUTH_METHOD"] == "trust"
    assert service_host_and_port(variables["TEST_DATABASE_URL"]) == ("postgres", 5432)
    assert service_host_and_port(variables["TEST_REDIS_URL"]) == ("redis", 6379)


def test_gitlab_coverage_job_runs_make_cov_whole_and_reports_its_total(gitlab: Path) -> None:
    pipeline = load_yaml(gitlab / ".gitlab-ci.yml")
    coverage, test = pipeline["coverage"], pipeline[".test"]
    assert "parallel" not in coverage
    assert coverage["script"] == ["make cov PYTHON=python"]
    assert (coverage["services"], coverage["variables"]) == (test["services"], test["variables"])
    # GitLab takes the total from the job's log with this pattern: the last line of make cov's
    # report, not a module's line above it.
    pattern = re.compile(coverage["coverage"].strip("/"), re.MULTILINE)
    report = "\n".join(
        [
            "src/pkg/app.py    29    4    2    1    84%   41-46",
            "TOTAL    1839    84    390    36    95%",
        ]
    )
    assert [match[1] for match in pattern.finditer(report)] == ["95"]
    assert coverage["artifacts"]["reports"]["coverage_report"] == {
        "coverage_format": "cobertura",
        "path": "coverage.xml",
    }


@pytest.mark.parametrize("version", PYTHON_VERSIONS)
def test_gitlab_tests_on_every_python_from_the_answer_up_with_a_lock_keyed_uv_cache(
    bake: Callable[..., Path], version: str
) -> None:
    pipeline = load_yaml(bake(ci="gitlab", python_version=version) / ".gitlab-ci.yml")
    default = pipeline["default"]
    assert default["image"] == pinned(f"python:{version}")
    # The suite on every supported Python from the answer up, each job on its own image.
    jobs = {name: job for name, job in pipeline.items() if name.startswith("test-")}
    assert list(jobs) == [f"test-{python}" for python in supported_from(version)]
    for python, job in zip(supported_from(version), jobs.values(), strict=True):
        assert job == {"extends": ".test", "image": pinned(f"python:{python}")}
    assert default["cache"]["key"] == {"files": ["uv.lock"]}
    # uv's cache must be inside the project directory for GitLab to keep it.
    cache_dir = pipeline["variables"]["UV_CACHE_DIR"]
    assert cache_dir.startswith("$CI_PROJECT_DIR/")
    assert default["cache"]["paths"] == [cache_dir.removeprefix("$CI_PROJECT_DIR/")]


# name:tag@sha256:<64 hex digits>: a tag for people and Renovate, the digest for the pull.
PINNED_IMAGE = re.compile(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}")


def pipeline_images(pipeline: dict[str, Any]) -> list[str]:
    """Every image a GitLab pipeline pulls: its jobs' (and the default) images and services."""
    images = []
    for job in pipeline.values():
        if isinstance(job, dict):
            images += [job["image"]] if "image" in job else []
            images += [service["name"] for service in job.get("services", [])]
    return images


def test_every_image_of_the_gitlab_pipeline_is_pinned_by_a_recorded_digest(gitlab: Path) -> None:
    images = pipeline_images(load_yaml(gitlab / ".gitlab-ci.yml"))
    assert len(images) >= 4
    assert [image for image in images if not PINNED_IMAGE.fullmatch(image)] == []
    assert {image.split("@")[0] for image in images} <= set(TEMPLATE_CONTEXT["_images"])


def test_the_digest_check_catches_an_image_named_by_tag_only(gitlab: Path) -> None:
    text = (gitlab / ".gitlab-ci.yml").read_text(encoding="utf-8")
    by_tag = yaml.safe_load(text.replace(pinned("redis:7"), "redis:7"))
    # Named in the test jobs and, through the anchor, in the coverage job.
    assert [image for image in pipeline_images(by_tag) if not PINNED_IMAGE.fullmatch(image)] == [
        "redis:7",
        "redis:7",
    ]


def test_make_test_hands_pytest_args_to_pytest(github: Path) -> None:
    result = run_make(github, "-n", "test", "PYTEST_ARGS=--splits 2 --group 1 --randomly-seed=7")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == (
        ".venv/bin/python -m pytest -n auto --splits 2 --group 1 --randomly-seed=7"
    )


# Docker


@pytest.fixture(scope="module")
def docker(bake: Callable[..., Path]) -> Path:
    """A bake with the Docker files."""
    return bake(docker="yes")


def dockerfile_stages(project: Path) -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), one list per build stage."""
    text = (project / "Dockerfile").read_text(encoding="utf-8")
    stages: list[list[tuple[str, str]]] = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        keyword, _, arguments = line.strip().partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append((keyword.upper(), arguments.strip()))
    return stages


def instruction(stage: list[tuple[str, str]], keyword: str) -> str:
    """The arguments of the stage's last `keyword` instruction, the one that takes effect."""
    arguments = [args for found, args in stage if found == keyword]
    assert arguments, f"no {keyword} in the stage"
    return arguments[-1]


def image_environment(stage: list[tuple[str, str]]) -> dict[str, str]:
    """What the stage's ENV instructions set."""
    pairs = [word for found, args in stage if found == "ENV" for word in shlex.split(args)]
    return dict(pair.split("=", 1) for pair in pairs)


def package(project: Path) -> str:
    """The baked package's import name."""
    [name] = [path.name for path in (project / "src").iterdir() if path.is_dir()]
    return name


@pytest.mark.parametrize("version", PYTHON_VERSIONS)
def test_dockerfile_builds_on_the_answered_slim_python(
    bake: Callable[..., Path], version: str
) -> None:
    stages = dockerfile_stages(bake(docker="yes", python_version=version))
    assert len(stages) == 2
    bases = [instruction(stage, "FROM").split()[0] for stage in stages]
    assert bases == [f"python:{version}-slim"] * 2


def test_image_runs_the_service_unprivileged_on_all_interfaces(docker: Path) -> None:
    final = dockerfile_stages(docker)[-1]
    user = instruction(final, "USER").split(":")[0]
    assert user not in ("root", "0")
    environment = image_environment(final)
    assert environment["HOST"] == "0.0.0.0"
    assert instruction(final, "EXPOSE") == environment["PORT"]
    assert json.loads(instruction(final, "CMD")) == ["python", "-m", package(docker), "serve"]
    healthcheck = instruction(final, "HEALTHCHECK")
    assert re.search(r"(^|\s)CMD\s", healthcheck)
    assert "/healthz" in healthcheck
    assert "/healthz" in (docker / "src" / package(docker) / "app.py").read_text(encoding="utf-8")


def test_build_context_holds_what_the_dockerfile_copies(docker: Path) -> None:
    ignore = (docker / ".dockerignore").read_text(encoding="utf-8").splitlines()
    # An allow-list: everything is left out, then the build's inputs are let back in.
    assert ignore[ignore.index("*") + 1].startswith("!")
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    sources = [
        source
        for stage in dockerfile_stages(docker)
        for keyword, args in stage
        if keyword == "COPY" and not args.startswith("--from=")
        for source in args.split()[:-1]
    ]
    assert sorted(sources) == ["LICENSE", "README.md", "pyproject.toml", "src", "uv.lock"]
    assert set(sources) <= allowed
    assert all((docker / source).exists() for source in sources)


def test_compose_runs_postgres_redis_migrations_and_the_service(docker: Path) -> None:
    compose = load_yaml(docker / "docker-compose.yml")
    services = compose["services"]
    slug = docker.name
    assert sorted(services) == sorted(["postgres", "redis", "migrate", slug])
    assert services["postgres"]["environment"] == {"POSTGRES_HOST_AUTH_METHOD": "trust"}
    app, migrate = services[slug], services["migrate"]
    assert app["build"] == migrate["build"] == "."
    assert migrate["command"] == ["python", "-m", package(docker), "migrate"]
    assert app["ports"] == ["127.0.0.1:8000:8000"]
    assert app["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    environment = app["environment"]
    assert migrate["environment"] == environment
    assert {"DATABASE_URL", "REDIS_URL", "AUTH_KEYS_FILE"} <= set(environment)
    assert urlsplit(environment["DATABASE_URL"]).hostname == "postgres"
    assert urlsplit(environment["REDIS_URL"]).hostname == "redis"
    # The keyring is the development key's public half, mounted as a secret.
    assert app["secrets"] == migrate["secrets"] == ["jwks"]
    assert environment["AUTH_KEYS_FILE"] == "/run/secrets/jwks"
    assert compose["secrets"]["jwks"]["file"] == ".dev/jwks.json"


def test_makefile_makes_the_key_compose_mounts(docker: Path) -> None:
    result = run_make(docker, "-n", ".dev/jwks.json")
    assert result.returncode == 0, result.stderr
    assert f"-m {package(docker)} keygen" in result.stdout


def run_baked(project: Path, environment: dict[str, str], *args: str) -> str:
    """Run this interpreter in the baked project with only `environment`; return stdout."""
    result = subprocess.run(
        [sys.executable, *args],
        cwd=project,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": "src", **environment},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_commands_the_containers_run_exist(docker: Path, command: str) -> None:
    assert "usage:" in run_baked(docker, {}, "-m", package(docker), command, "--help")


def test_service_accepts_the_container_environment(docker: Path, tmp_path: Path) -> None:
    name = package(docker)
    keyring = tmp_path / "jwks.json"
    jwks = run_baked(docker, {}, "-m", name, "keygen", "--private-key", str(tmp_path / "key.json"))
    keyring.write_text(jwks, encoding="utf-8")
    compose_environment = load_yaml(docker / "docker-compose.yml")["services"]["migrate"][
        "environment"
    ]
    environment = {
        **image_environment(dockerfile_stages(docker)[-1]),
        **compose_environment,
        # Where compose mounts the secret, here.
        "AUTH_KEYS_FILE": str(keyring),
    }
    environment.pop("PATH")
    settings = json.loads(
        run_baked(
            docker,
            environment,
            "-c",
            f"import json; from {name}.settings import Settings; s = Settings.from_env();"
            " print(json.dumps([s.database_url, s.redis_url, s.host, s.port]))",
        )
    )
    assert settings == [
        environment["DATABASE_URL"],
        environment["REDIS_URL"],
        "0.0.0.0",
        int(environment["PORT"]),
    ]


# Official schemas and linters


# The official schema of each generated CI, Dependabot and Compose file, as check-jsonschema
# vendors it (so no network is needed).
SCHEMAS = {
    ".github/workflows/*.yml": "vendor.github-workflows",
    ".github/dependabot.yml": "vendor.dependabot",
    ".gitlab-ci.yml": "vendor.gitlab-ci",
    "renovate.json": "vendor.renovate",
    "docker-compose.yml": "vendor.compose-spec",
}
CHECKED_FILES = {
    "github": [".github/dependabot.yml", ".github/workflows/ci.yml", "docker-compose.yml"],
    "gitlab": [".gitlab-ci.yml", "docker-compose.yml", "renovate.json"],
}
SCRIPTS = Path(sysconfig.get_path("scripts"))


def check_jsonschema(schema: str, files: list[Path]) -> Result:
    """Validate files against one of check-jsonschema's vendored schemas, through its command
    line run in this process: a process of its own would cost ten times the check."""
    return CliRunner().invoke(check_jsonschema_cli, ["--builtin-schema", schema, *map(str, files)])


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    """Lint a Dockerfile, failing on every finding down to style."""
    return subprocess.run(
        [SCRIPTS / "hadolint", "--no-color", "--failure-threshold", "style", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("version", PYTHON_VERSIONS)
@pytest.mark.parametrize("ci", sorted(CHECKED_FILES))
def test_ci_dependabot_and_compose_files_match_their_official_schemas(
    bake: Callable[..., Path], ci: str, version: str
) -> None:
    project = bake(ci=ci, python_version=version)
    checked = []
    for pattern, schema in SCHEMAS.items():
        files = sorted(project.glob(pattern))
        if files:
            result = check_jsonschema(schema, files)
            assert result.exit_code == 0, result.output
            checked += [str(path.relative_to(project)) for path in files]
    assert sorted(checked) == CHECKED_FILES[ci]


# A break of each file that its schema must catch: the text replaced, and its replacement.
SCHEMA_BREAKS = {
    ".github/workflows/ci.yml": ("runs-on:", "runs_on:"),
    ".github/dependabot.yml": ("version: 2", "version: 3"),
    ".gitlab-ci.yml": ("coverage_format: cobertura", "coverage_format: xml"),
    "renovate.json": ('"enabled": true', '"enabled": "yes"'),
    "docker-compose.yml": ("condition: service_healthy", "condition: service_ready"),
}


@pytest.mark.parametrize(("path", "change"), SCHEMA_BREAKS.items(), ids=list(SCHEMA_BREAKS))
def test_schema_check_catches_a_broken_file(
    bake: Callable[..., Path], tmp_path: Path, path: str, change: tuple[str, str]
) -> None:
    project = bake(ci="gitlab" if path in (".gitlab-ci.yml", "renovate.json") else "github")
    [schema] = [schema for pattern, schema in SCHEMAS.items() if Path(path).match(pattern)]
    text = (project / path).read_text(encoding="utf-8")
    assert change[0] in text
    broken = tmp_path / Path(path).name
    broken.write_text(text.replace(change[0], change[1]), encoding="utf-8")
    result = check_jsonschema(schema, [broken])
    assert result.exit_code == 1, result.output
    assert "Schema validation errors were encountered" in result.output


@pytest.mark.parametrize("version", PYTHON_VERSIONS)
def test_dockerfile_passes_hadolint(bake: Callable[..., Path], version: str) -> None:
    result = hadolint(bake(docker="yes", python_version=version) / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_what_it_is_there_for(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM python:latest\nRUN pip install starlette\n", encoding="utf-8")
    result = hadolint(dockerfile)
    assert result.returncode == 1
    assert re.findall(r"\bDL\d{4}\b", result.stdout) == ["DL3007", "DL3013", "DL3042"]


# Supply chain: the workflows and Dependabot file through zizmor's offline audits, the actions
# pinned to commits, and make audit.

ZIZMOR = SCRIPTS / "zizmor"
# owner/repo (or owner/repo/path) at a full commit, the release it is in a comment beside it.
PINNED_USES = re.compile(r"[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+")


def zizmor(path: Path) -> subprocess.CompletedProcess[str]:
    """zizmor's offline audits, at its default persona, of every workflow and Dependabot file in
    `path`; a file it cannot read fails the run rather than being skipped."""
    return subprocess.run(
        [ZIZMOR, "--offline", "--strict-collection", "--format", "plain", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("docker", ["yes", "no"])
def test_github_workflow_and_dependabot_pass_zizmor(bake: Callable[..., Path], docker: str) -> None:
    result = zizmor(bake(ci="github", docker=docker))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout


def test_zizmor_catches_an_action_referenced_by_tag(github: Path, tmp_path: Path) -> None:
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    text = (github / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8")
    unpinned = re.sub(r"actions/checkout@[0-9a-f]{40} # \S+", "actions/checkout@v7", text, count=1)
    assert unpinned != text
    (workflows / "ci.yml").write_text(unpinned, encoding="utf-8")
    result = zizmor(tmp_path)
    assert result.returncode != 0
    assert "unpinned-uses" in result.stdout


def test_every_action_is_pinned_to_a_commit_and_no_job_keeps_credentials(github: Path) -> None:
    workflow = load_yaml(github / ".github" / "workflows" / "ci.yml")
    text = (github / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8")
    uses = [line.split("uses:", 1)[1].strip() for line in text.splitlines() if "uses:" in line]
    assert uses
    assert [ref for ref in uses if not PINNED_USES.fullmatch(ref)] == []
    # One release of each action across the jobs, so an update moves every job at once.
    assert len({ref.split("@")[0] for ref in uses}) == len(set(uses))
    # Read-only by default; no job asks for more.
    assert workflow["permissions"] == {"contents": "read"}
    for job in workflow["jobs"].values():
        assert "permissions" not in job
        assert step_using(job["steps"], "actions/checkout")["with"] == {
            "persist-credentials": False
        }


def test_dependabot_waits_a_week_before_proposing_a_release(github: Path) -> None:
    config = load_yaml(github / ".github" / "dependabot.yml")
    assert [update["cooldown"] for update in config["updates"]] == [
        {"default-days": 7} for _ in config["updates"]
    ]


class _VulnerabilityDatabase(BaseHTTPRequestHandler):
    """An OSV service on loopback for make audit, which needs one it can reach (api.osv.dev is
    not, here): it knows one advisory, against the package `vulnerable` at every version, and
    notes the name of every package it is asked about."""

    vulnerable: ClassVar[str] = ""
    queried: ClassVar[list[str]] = []
    ADVISORY = "GHSA-test-0000-0001"

    def do_POST(self) -> None:
        queries = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["queries"]
        names = [query["package"]["name"] for query in queries]
        self.queried.extend(names)
        found = {"vulns": [{"id": self.ADVISORY, "modified": "2026-01-01T00:00:00Z"}]}
        self._reply({"results": [found if name == self.vulnerable else {} for name in names]})

    def do_GET(self) -> None:
        fixed = {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "999.0"}]}
        affected = {"package": {"name": self.vulnerable, "ecosystem": "PyPI"}, "ranges": [fixed]}
        self._reply(
            {
                "id": self.ADVISORY,
                "summary": "a test advisory",
                "modified": "2026-01-01T00:00:00Z",
                "affected": [affected],
            }
        )

    def _reply(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.parametrize(("vulnerable", "fails"), [("starlette", True), ("", False)])
def test_make_audit_looks_up_every_locked_package_and_fails_on_a_vulnerability(
    github: Path, vulnerable: str, fails: bool
) -> None:
    handler = type("Database", (_VulnerabilityDatabase,), {"vulnerable": vulnerable, "queried": []})
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            result = run_make(
                github,
                "audit",
                f"AUDIT_ARGS=--service-url http://127.0.0.1:{server.server_address[1]}",
                UV=str(SCRIPTS / "uv"),
                timeout=120,
            )
        finally:
            server.shutdown()
    output = result.stdout + result.stderr
    assert (result.returncode != 0) is fails, output
    assert (handler.ADVISORY in output) is fails, output
    # Every group's packages, not only the service's: pytest is in the test group, ruff in lint,
    # matplotlib in loadtest, which make install leaves out.
    assert {"starlette", "pytest", "ruff", "matplotlib"} <= set(handler.queried)
