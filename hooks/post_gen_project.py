"""Tell the user how to test and run the project that was just baked."""

import json
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULT_TEST_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/0"


def next_steps(answers: Mapping[str, Any], project_dir: Path) -> str:
    """Return the message shown after a successful bake."""
    name = answers["project_name"]
    # Quoted, so the line can be pasted into a shell even if the output dir has spaces.
    cd_target = shlex.quote(str(project_dir))
    return f"""
Created {name} in {project_dir}

Next steps:
  cd {cd_target}
  make test  # creates the virtualenv, installs the project, runs the suite with pytest-xdist
             # against Postgres at TEST_DATABASE_URL (default {DEFAULT_TEST_DATABASE_URL})
             # and Redis at TEST_REDIS_URL (default {DEFAULT_TEST_REDIS_URL})
  make dev   # runs the service
"""


def main(answers: Mapping[str, Any], project_dir: Path) -> None:
    """Print the next steps for the baked project."""
    print(next_steps(answers, project_dir))


if __name__ == "__main__":
    # Rendered by cookiecutter, which runs hooks from inside the new project directory; the
    # answers arrive as a JSON string literal so that they stay data.
    main(json.loads(r"""{{ cookiecutter | tojson }}"""), Path.cwd())
