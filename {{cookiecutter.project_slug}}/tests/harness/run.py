"""What a whole run shares, decided once by the xdist controller and handed to every worker.

The controller (or the lone process of a run without xdist) resolves the services, picks the run
id and holds the run's lock for as long as it runs, reaps what dead runs left behind, and makes
the key that signs the tests' tokens. Workers receive all of it through `workerinput` and build
nothing the controller already built.

When pytest-split runs one shard of the suite (`--splits N --group G`), the run id starts with
`s<G>of<N>`, so shards on different machines that share one Postgres and one Redis never collide
and every schema and key says which shard made it.
"""

import contextlib
import dataclasses
import secrets
import sys
from typing import Any

import pytest

from {{ cookiecutter.package_name }}.auth import SigningKey
from {{ cookiecutter.package_name }}.settings import (
    ConfigError,
    check_pooled_url,
    read,
)

from .embedded import EmbeddedUnavailable
from .namespaces import Postgres, reap_orphans, reap_worker, run_claim
from .services import ServiceMisconfigured, ServiceUnreachable, resolve

WORKER_INPUT_KEY = "harness_run"
_context = pytest.StashKey["RunContext"]()
_services = pytest.StashKey[contextlib.ExitStack]()


@dataclasses.dataclass(frozen=True, slots=True)
class RunContext:
    """The run's id, services and token-signing key."""

    run_id: str
    database_url: str
    direct_database_url: str
    database_pooler: str
    redis_url: str
    origin: dict[str, str]
    signing_jwk: dict[str, Any]

    @property
    def signing_key(self) -> SigningKey:
        return SigningKey.from_jwk(self.signing_jwk)

    @property
    def postgres(self) -> Postgres:
        return Postgres(self.database_url, self.direct_database_url, self.database_pooler)


def start(config: pytest.Config) -> None:
    """Set up the run's context: take it from the controller, or build it if we are the run."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        config.stash[_context] = RunContext(**workerinput[WORKER_INPUT_KEY])
        return
    _refuse_unseeded_shard(config)
    services = contextlib.ExitStack()
    config.stash[_services] = services
    try:
        resolved = resolve(services)
        _check_pooler(resolved.database_url, resolved.database_pooler)
    except (ServiceUnreachable, ServiceMisconfigured, EmbeddedUnavailable) as error:
        services.close()
        pytest.exit(f"harness: {error}", returncode=pytest.ExitCode.USAGE_ERROR)
    run_id = shard_tag(config) + secrets.token_hex(4)
    postgres = Postgres.of(resolved)
    services.enter_context(run_claim(postgres, run_id))
    reaped = reap_orphans(postgres, resolved.redis_url, run_id)
    if reaped.schemas:
        print(
            f"harness: reaped {len(reaped.schemas)} schema(s) and {reaped.keys} Redis key(s)"
            " left by dead test runs",
            file=sys.stderr,
        )
    config.stash[_context] = RunContext(
        run_id=run_id,
        database_url=resolved.database_url,
        direct_database_url=resolved.direct_database_url,
        database_pooler=resolved.database_pooler,
        redis_url=resolved.redis_url,
        origin=resolved.origin,
        signing_jwk=SigningKey.generate(issuer="tests").private_jwk(),
    )


def _check_pooler(url: str, pooler: str) -> None:
    """Refuse TEST_DATABASE_POOLER and TEST_DATABASE_URL where the service would refuse them as
    DATABASE_POOLER and DATABASE_URL, before any worker starts."""
    try:
        parsed = read(("database_pooler",), {"DATABASE_POOLER": pooler})["database_pooler"]
        check_pooled_url(url, parsed)
    except ConfigError as error:
        raise ServiceMisconfigured(
            f"TEST_{error} (TEST_DATABASE_URL, TEST_DATABASE_POOLER)"
        ) from None


def shard_tag(config: pytest.Config) -> str:
    """`s<group>of<splits>` when pytest-split runs one shard of the suite, else ""."""
    splits = config.getoption("splits", None)
    group = config.getoption("group", None)
    return f"s{group}of{splits}" if splits and group else ""


def _refuse_unseeded_shard(config: pytest.Config) -> None:
    """Stop a sharded run whose shuffle could differ from the other shards' shuffles."""
    # pytest-split picks a shard's tests by their place in the collection, which pytest-randomly
    # has already shuffled: shards shuffled with different seeds would run some tests twice and
    # others never. The parsed command line still holds the seed as given, before randomly
    # replaces "default" with a fresh one.
    seed = getattr(config.known_args_namespace, "randomly_seed", None)
    shuffled = config.pluginmanager.has_plugin("randomly")
    if shard_tag(config) and shuffled and not isinstance(seed, int):
        pytest.exit(
            "harness: a sharded run needs the same --randomly-seed=<integer> on every shard"
            " (in CI, the pipeline's id), or -p no:randomly",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


def hand_to_worker(node: Any) -> None:
    """On the controller: give a starting worker (an xdist WorkerController) the context."""
    node.workerinput[WORKER_INPUT_KEY] = dataclasses.asdict(node.config.stash[_context])


def clean_up_crashed_worker(node: Any) -> None:
    """On the controller: drop the schema and keys of a worker that died mid-run."""
    context = node.config.stash[_context]
    worker = node.workerinput["workerid"]
    reaped = reap_worker(context.postgres, context.redis_url, context.run_id, worker)
    print(
        f"harness: worker {worker} crashed; dropped {', '.join(reaped.schemas) or 'no schema'}"
        f" and {reaped.keys} Redis key(s)",
        file=sys.stderr,
    )


def summary(config: pytest.Config) -> dict[str, Any]:
    """The run-level facts for the report."""
    context = config.stash[_context]
    return {
        "run_id": context.run_id,
        "origin": context.origin,
        "database_pooler": context.database_pooler,
        "app_scope": config.getoption("app_scope"),
    }


def stop(config: pytest.Config) -> None:
    """On the controller: stop the servers embedded mode started, if any."""
    services = config.stash.get(_services, None)
    if services is not None:
        services.close()


def context(config: pytest.Config) -> RunContext:
    return config.stash[_context]
