"""Write the uv.lock of every bake into templates/uv-lock/, which the project's uv.lock includes.

A baked pyproject differs by answer in two ways that a lock records: its Python floor
(python_version) and its runtime dependencies (tracing). So the template keeps one lock per pair
of those answers, and the project template's uv.lock is a Jinja include of the answered pair's
lock. Each is written by uv itself, from a bake with those answers, under a placeholder name that
becomes `{{ cookiecutter.project_slug }}`. uv keeps what the previous lock pinned unless told to
upgrade, so a pyproject change moves only what it must.

Usage: python -m tools.locks [--upgrade] [--python PATH]  (PATH: an interpreter that meets every
floor, which uv needs to lock; by default one found on PATH or among pyenv's).
"""

import argparse
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cookiecutter.main import cookiecutter
from uv import find_uv_bin

from local_extensions import version_key

TEMPLATE_DIR = Path(__file__).resolve().parent.parent
LOCK_DIR = TEMPLATE_DIR / "templates" / "uv-lock"
PLACEHOLDER = "lock-placeholder"
# What the project template's uv.lock includes: Jinja must see nothing of its own in a lock.
JINJA_MARKUP = re.compile(r"\{[{%#]")


def lock_path(python_version: str, tracing: str) -> Path:
    """Where the lock of bakes with these answers lives."""
    return LOCK_DIR / f"{python_version}-{tracing}.lock"


def answer_sets() -> list[tuple[str, str]]:
    """Every (python_version, tracing) pair the questions offer."""
    context = json.loads((TEMPLATE_DIR / "cookiecutter.json").read_text(encoding="utf-8"))
    return list(itertools.product(context["_python_versions"], context["tracing"]))


def python_at_least(floor: str) -> str | None:
    """An interpreter that runs and is `floor` or newer: this one, one on PATH, or one of pyenv's
    (whose shims on PATH run only the versions pyenv has selected)."""
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = [
        sys.executable,
        *filter(None, (shutil.which(f"python3.{minor}") for minor in range(20, 10, -1))),
        *map(str, sorted(pyenv_root.glob("versions/*/bin/python3"), reverse=True)),
    ]
    check = f"import sys; sys.exit(sys.version_info < {version_key(floor)})"
    for candidate in candidates:
        if subprocess.run([candidate, "-c", check], capture_output=True).returncode == 0:
            return candidate
    return None


def write_lock(python_version: str, tracing: str, python: str, upgrade: bool) -> None:
    """Bake with these answers under the placeholder name, lock it, keep its lock."""
    with tempfile.TemporaryDirectory() as output:
        project = Path(
            cookiecutter(
                str(TEMPLATE_DIR),
                no_input=True,
                output_dir=output,
                accept_hooks=False,
                extra_context={
                    "project_slug": PLACEHOLDER,
                    "python_version": python_version,
                    "tracing": tracing,
                },
            )
        )
        # A question's new answer has no lock yet: uv writes its first.
        if not lock_path(python_version, tracing).read_text(encoding="utf-8"):
            (project / "uv.lock").unlink()
        command = [find_uv_bin(), "lock", "--quiet", "--python", python, "--project", project]
        subprocess.run([*command, *(["--upgrade"] if upgrade else [])], check=True)
        lock = (project / "uv.lock").read_text(encoding="utf-8")
    if JINJA_MARKUP.search(lock):
        sys.exit(f"the {python_version}-{tracing} lock holds Jinja markup: it cannot be included")
    own_name = f'name = "{PLACEHOLDER}"'
    assert lock.count(f"\n{own_name}\n") == 1, "the lock must name the project once"
    lock = lock.replace(own_name, 'name = "{{ cookiecutter.project_slug }}"')
    lock_path(python_version, tracing).write_text(lock, encoding="utf-8")
    print(f"wrote {lock_path(python_version, tracing).relative_to(TEMPLATE_DIR)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upgrade", action="store_true", help="newest versions of everything")
    parser.add_argument("--python", help="an interpreter meeting every python_version's floor")
    args = parser.parse_args()
    pairs = answer_sets()
    highest_floor = max((version for version, _ in pairs), key=version_key)
    python = args.python or python_at_least(highest_floor)
    if python is None:
        sys.exit(f"no Python {highest_floor} or newer found: pass --python /path/to/python")
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    for python_version, tracing in pairs:
        lock_path(python_version, tracing).touch()
        write_lock(python_version, tracing, python, args.upgrade)


if __name__ == "__main__":
    main()
