"""Remove the files of the options not chosen, then tell the user how to test and run the project.

Cookiecutter runs this hook in the directory it has just rendered. So does cruft, which for
`cruft update` and `cruft diff` renders the template afresh into temporary directories and
diffs the renders: the hook only ever touches a fresh render, never a team's working copy.
"""

import json
import shlex
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULT_TEST_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/0"
# For each option, the paths (relative to the project) that only one of its answers keeps.
OPTION_PATHS: dict[str, dict[str, tuple[str, ...]]] = {
    "ci": {"github": (".github",), "gitlab": (".gitlab-ci.yml",), "none": ()},
    "docker": {"yes": ("Dockerfile", ".dockerignore", "docker-compose.yml"), "no": ()},
}


def deselected_paths(answers: Mapping[str, Any]) -> list[str]:
    """Return the paths that belong to answers other than the ones given, sorted."""
    return sorted(
        path
        for option, paths_by_answer in OPTION_PATHS.items()
        for answer, paths in paths_by_answer.items()
        if answer != answers[option]
        for path in paths
    )


def remove_deselected(answers: Mapping[str, Any], project_dir: Path) -> None:
    """Delete the deselected paths under project_dir."""
    for relative in deselected_paths(answers):
        path = project_dir / relative
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


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
    """Drop the deselected options' files from the fresh render and print the next steps."""
    remove_deselected(answers, project_dir)
    print(next_steps(answers, project_dir))


if __name__ == "__main__":
    # Rendered by cookiecutter, which runs hooks from inside the new project directory; the
    # answers arrive as a JSON string literal so that they stay data.
    main(json.loads(r"""{{ cookiecutter | tojson }}"""), Path.cwd())
