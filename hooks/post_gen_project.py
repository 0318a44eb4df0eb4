"""Tidy the fresh render, then tell the user how to test and run the project.

The files of the answers not chosen are never rendered: in the project template, each such
file's name is a Jinja `if` on its answer, and cookiecutter skips a file whose name renders
empty. So nothing needs deleting after a bake, and a bake with `-f` over an existing project
never touches the team's own `.gitlab-ci.yml`, `Dockerfile` or `.github/workflows/release.yml`.
A directory cannot be skipped that way (cookiecutter fails on an empty directory name), so the
directories that hold only such files are created regardless; this hook removes the ones that
are empty, which hold nothing to lose.
"""

import json
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULT_TEST_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/0"
# Directories of the project template whose files all have conditional names, innermost first.
OPTIONAL_DIRS = (".github/workflows", ".github", "deploy/kubernetes", "deploy")


def remove_empty_optional_dirs(project_dir: Path) -> None:
    """Remove the optional directories that hold nothing; one that holds anything stays."""
    for relative in OPTIONAL_DIRS:
        path = project_dir / relative
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def next_steps(answers: Mapping[str, Any], project_dir: Path) -> str:
    """Return the message shown after a successful bake."""
    name = answers["project_name"]
    # Quoted, so the line can be pasted into a shell even if the output dir has spaces.
    cd_target = shlex.quote(str(project_dir))
    return f"""
Created {name} in {project_dir}

Next steps:
  cd {cd_target}
  git init && git add -A && git commit -m "Bake from the template"
             # cruft update needs a git repository; see "Keeping up with the template"
  make test  # creates the virtualenv, installs the project, runs the suite with pytest-xdist
             # against Postgres at TEST_DATABASE_URL (default {DEFAULT_TEST_DATABASE_URL})
             # and Redis at TEST_REDIS_URL (default {DEFAULT_TEST_REDIS_URL})
  make dev   # runs the service
"""


def main(answers: Mapping[str, Any], project_dir: Path) -> None:
    """Remove the render's empty optional directories and print the next steps."""
    remove_empty_optional_dirs(project_dir)
    print(next_steps(answers, project_dir))


if __name__ == "__main__":
    # Rendered by cookiecutter, which runs hooks from inside the new project directory; the
    # answers arrive as a JSON string literal so that they stay data.
    main(json.loads(r"""{{ cookiecutter | tojson }}"""), Path.cwd())
