"""What a whole run shares: an id chosen once, by the xdist controller, and handed to workers.

The id names every schema and Redis prefix the run creates, so two runs against the same
Postgres and Redis never collide, and a leftover object tells which run made it.
"""

import secrets
from typing import Any

import pytest

WORKER_INPUT_KEY = "harness_run_id"
_run_id = pytest.StashKey[str]()


def configure(config: pytest.Config) -> None:
    """Pick the run id (controller or lone process), or take the one the controller sent."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        config.stash[_run_id] = workerinput[WORKER_INPUT_KEY]
    else:
        config.stash[_run_id] = secrets.token_hex(4)


def configure_node(node: Any) -> None:
    """On the controller: give a starting worker (an xdist WorkerController) the run id."""
    node.workerinput[WORKER_INPUT_KEY] = node.config.stash[_run_id]


def run_id(config: pytest.Config) -> str:
    return config.stash[_run_id]
