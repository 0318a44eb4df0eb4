"""A deploy=kubernetes bake's manifests, checked without a cluster: each passes the Kubernetes API's
own schemas (kubernetes-validate --strict) and checkov, the kustomize base holds them all, and
they agree with the service: its settings, its probes' paths, its drain."""

import json
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import TEMPLATE_DIR
from tests.generated_runs import clean_environment, suite_command

SCRIPTS = Path(sysconfig.get_path("scripts"))
CHECKOV = TEMPLATE_DIR / "tools" / "checkov" / ".venv" / "bin" / "checkov"
# The oldest Kubernetes the manifests support (the preStop `sleep` action is on by default from
# 1.30), and kubernetes-validate's newest.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
ASSIGNMENT = re.compile(r"(?P<commented># )?(?P<variable>[A-Z][A-Z0-9_]*)=(?P<value>.*)")
PLACEHOLDER_DIGEST = "sha256:" + "0" * 64


@pytest.fixture(scope="module")
def project(bake: Callable[..., Path]) -> Path:
    return bake(deploy="kubernetes")


@pytest.fixture(scope="module")
def deploy(project: Path) -> Path:
    return project / "deploy" / "kubernetes"


@pytest.fixture(scope="module")
def manifests(deploy: Path) -> dict[str, Any]:
    """Each resource manifest by its kind."""
    resources = [load(path) for path in sorted(deploy.glob("*.yaml"))]
    return {resource["kind"]: resource for resource in resources if "spec" in resource}


@pytest.fixture(scope="module")
def settings_env(deploy: Path) -> dict[str, str | None]:
    """settings.env's variables: the value of each one set, None for those commented out."""
    variables: dict[str, str | None] = {}
    for line in (deploy / "settings.env").read_text(encoding="utf-8").splitlines():
        match = ASSIGNMENT.fullmatch(line)
        if match:
            variables[match["variable"]] = None if match["commented"] else match["value"]
    return variables


@pytest.fixture(scope="module")
def declared(project: Path) -> dict[str, str]:
    """Every variable the service declares, with its default as `.env.example` spells it, read
    from the baked service's own `settings --env`."""
    env_example = run_in(project, "-m", package(project), "settings", "--env")
    return {
        match["variable"]: match["value"]
        for match in map(ASSIGNMENT.fullmatch, env_example.splitlines())
        if match
    }


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def package(project: Path) -> str:
    [name] = [path.name for path in (project / "src").iterdir() if path.is_dir()]
    return name


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    [only] = manifest["spec"]["template"]["spec"]["containers"]
    return only


def env_names(manifest: dict[str, Any]) -> set[str]:
    return {variable["name"] for variable in container(manifest)["env"]}


def kubernetes_validate(version: str, files: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SCRIPTS / "kubernetes-validate", "--strict", "--kubernetes-version", version, *files],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_default_bake_has_no_deploy_directory(bake: Callable[..., Path]) -> None:
    assert not (bake() / "deploy").exists()


def test_the_kustomization_lists_every_manifest_and_the_settings(deploy: Path) -> None:
    kustomization = load(deploy / "kustomization.yaml")
    files = {path.name for path in deploy.iterdir()}
    assert sorted(kustomization["resources"]) == sorted(
        name for name in files if name.endswith(".yaml") and name != "kustomization.yaml"
    )
    [generator] = kustomization["configMapGenerator"]
    assert generator["envs"] == ["settings.env"]
    assert files == {*kustomization["resources"], "kustomization.yaml", "settings.env"}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_passes_the_kubernetes_schemas_strictly(deploy: Path, version: str) -> None:
    files = sorted(path for path in deploy.glob("*.yaml") if path.name != "kustomization.yaml")
    result = kubernetes_validate(version, files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" passed for resource ") == len(files), result.stdout


def test_strict_validation_refuses_a_misspelt_field(deploy: Path, tmp_path: Path) -> None:
    manifest = (deploy / "deployment.yaml").read_text(encoding="utf-8")
    misspelt = tmp_path / "deployment.yaml"
    misspelt.write_text(manifest.replace("readinessProbe:", "readinesProbe:"), encoding="utf-8")
    result = kubernetes_validate(KUBERNETES_VERSIONS[0], [misspelt])
    assert result.returncode != 0
    assert "readinesProbe" in result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl (its kustomize)")
def test_the_rendered_base_passes_the_kubernetes_schemas(deploy: Path, tmp_path: Path) -> None:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(deploy)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    resources = list(yaml.safe_load_all(rendered))
    configmap = next(resource for resource in resources if resource["kind"] == "ConfigMap")
    # The pods name the ConfigMap as kustomize named it, with the hash of its contents.
    deployment = next(resource for resource in resources if resource["kind"] == "Deployment")
    [source] = container(deployment)["envFrom"]
    assert source["configMapRef"]["name"] == configmap["metadata"]["name"]
    assert configmap["data"] == {
        "HOST": "0.0.0.0",
        "PORT": "8000",
        "SHUTDOWN_DELAY_S": "0",
        "SHUTDOWN_TIMEOUT_S": "10",
    }
    # What the README's rollout applies first, by label: the settings and the migration Job.
    first = {
        resource["kind"]
        for resource in resources
        if resource["metadata"]["labels"].get("app.kubernetes.io/component")
        in ("settings", "migrate")
    }
    assert first == {"ConfigMap", "Job"}
    path = tmp_path / "rendered.yaml"
    path.write_text(rendered, encoding="utf-8")
    result = kubernetes_validate(KUBERNETES_VERSIONS[0], [path])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" passed for resource ") == len(resources), result.stdout


def test_checkov_fails_no_check_and_every_skip_says_why(
    deploy: Path, manifests: dict[str, Any]
) -> None:
    assert CHECKOV.is_file(), f"{CHECKOV} is missing: run `make install`"
    # One run over the directory: checkov takes seconds to start. --skip-download keeps it off
    # the network (its guidelines and external checks).
    command = [CHECKOV, "--directory", deploy, "--framework", "kubernetes", "--skip-download"]
    result = subprocess.run(
        [*command, "--output", "json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = json.loads(result.stdout)
    summary = report["summary"]
    failed = [
        (check["check_id"], check["resource"]) for check in report["results"]["failed_checks"]
    ]
    assert (summary["failed"], failed, summary["parsing_errors"]) == (0, [], 0)
    assert result.returncode == 0, result.stderr
    # The pods, which nearly all of its checks are about, were among what it read.
    checked = {check["resource"] for check in report["results"]["passed_checks"]}
    for kind in ("Deployment", "Job"):
        metadata = manifests[kind]["metadata"]
        assert f"{kind}.{metadata['namespace']}.{metadata['name']}" in checked
    skipped = report["results"]["skipped_checks"]
    # What checkov fills in for a skip annotated without a reason.
    reasons = [check["check_result"]["suppress_comment"].strip() for check in skipped]
    assert skipped and not {"", "No comment provided"} & set(reasons), skipped


def test_the_grace_period_outlasts_the_prestop_sleep_and_the_drain(
    manifests: dict[str, Any], settings_env: dict[str, str | None], declared: dict[str, str]
) -> None:
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    sleep = container(manifests["Deployment"])["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = sum(
        float(settings_env.get(variable) or declared[variable])
        for variable in ("SHUTDOWN_DELAY_S", "SHUTDOWN_TIMEOUT_S")
    )
    assert drain > 0
    assert pod["terminationGracePeriodSeconds"] > sleep + drain


def test_a_rollout_keeps_capacity(manifests: dict[str, Any]) -> None:
    rolling = manifests["Deployment"]["spec"]["strategy"]["rollingUpdate"]
    assert (rolling["maxUnavailable"], rolling["maxSurge"]) == (0, 1)
    assert manifests["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1


def test_the_probes_ask_paths_the_app_serves_on_its_port(
    project: Path, manifests: dict[str, Any], settings_env: dict[str, str | None], tmp_path: Path
) -> None:
    server = container(manifests["Deployment"])
    probes = [server[probe]["httpGet"] for probe in ("readinessProbe", "livenessProbe")]
    assert [probe["path"] for probe in probes] == ["/readyz", "/healthz"]
    name = package(project)
    # The keyring from the service's own keygen, read from a file as in a pod.
    keys = tmp_path / "jwks.json"
    keys.write_text(run_in(project, "-m", name, "keygen", "--private-key", str(tmp_path / "key")))
    routes = run_in(
        project,
        "-c",
        f"from {name}.app import create_app; from {name}.settings import Settings;"
        " print(*(route.path for route in create_app(Settings.from_env()).routes))",
        DATABASE_URL="postgresql://db/app",
        REDIS_URL="redis://cache/0",
        AUTH_KEYS_FILE=str(keys),
    )
    assert {probe["path"] for probe in probes} <= set(routes.split())
    [port] = server["ports"]
    assert {probe["port"] for probe in probes} == {port["name"]}
    assert str(port["containerPort"]) == settings_env["PORT"]
    assert settings_env["HOST"] == "0.0.0.0"


def test_every_variable_the_pods_get_is_a_declared_setting(
    manifests: dict[str, Any], settings_env: dict[str, str | None], declared: dict[str, str]
) -> None:
    given = env_names(manifests["Deployment"]) | env_names(manifests["Job"]) | set(settings_env)
    assert given - set(declared) == set()
    # The service reads INSTANCE_ID from the pod's own name.
    [instance] = [
        v for v in container(manifests["Deployment"])["env"] if v["name"] == "INSTANCE_ID"
    ]
    assert instance["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_the_keyring_is_read_from_the_mounted_secret(manifests: dict[str, Any]) -> None:
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    server = container(manifests["Deployment"])
    [path] = [v["value"] for v in server["env"] if v["name"] == "AUTH_KEYS_FILE"]
    [mount] = server["volumeMounts"]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    [item] = volume["secret"]["items"]
    assert path == f"{mount['mountPath']}/{item['path']}"


def test_both_pods_run_the_one_image_pinned_by_the_digest_the_readme_says_to_replace(
    project: Path, manifests: dict[str, Any]
) -> None:
    images = {container(manifests[kind])["image"] for kind in ("Deployment", "Job")}
    [image] = images
    assert image.endswith(f"@{PLACEHOLDER_DIGEST}")
    assert PLACEHOLDER_DIGEST in (project / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(("tracing", "allowed"), [("none", False), ("otel", True)])
def test_the_network_policy_lets_traces_out_only_where_they_are_sent(
    bake: Callable[..., Path], tracing: str, allowed: bool
) -> None:
    policy = load(
        bake(deploy="kubernetes", tracing=tracing) / "deploy/kubernetes/networkpolicy.yaml"
    )
    ports = {port["port"] for rule in policy["spec"]["egress"] for port in rule["ports"]}
    assert ports - {4318} == {5432, 6379, 53}
    assert (4318 in ports) is allowed


def test_the_baked_suite_checks_the_manifests_against_the_settings(project: Path) -> None:
    result = subprocess.run(
        suite_command("-p", "no:randomly", "tests/test_kubernetes.py"),
        cwd=project,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout, result.stdout


def run_in(project: Path, *args: str, **env: str) -> str:
    """Run this interpreter on the baked sources with `env`; return what it printed."""
    result = subprocess.run(
        [sys.executable, *args],
        cwd=project,
        env=clean_environment(PYTHONPATH="src", **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout
