"""Liveness and readiness probes, over real HTTP."""

import asyncio
import dataclasses
from pathlib import Path

import httpx
from redis.asyncio import Redis
from starlette.responses import JSONResponse

from {{ cookiecutter.package_name }} import health
from {{ cookiecutter.package_name }}.readiness import Readiness
from {{ cookiecutter.package_name }}.resources import Resources
from {{ cookiecutter.package_name }}.service import Service
from {{ cookiecutter.package_name }}.settings import Settings

from harness.embedded import embedded_redis, port_of, redis_server
from harness.live import LiveApp


async def test_liveness_answers_ok(shared_app: LiveApp) -> None:
    async with httpx.AsyncClient(base_url=shared_app.http_url) as client:
        response = await client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_readiness_reports_both_backends(shared_app: LiveApp) -> None:
    async with httpx.AsyncClient(base_url=shared_app.http_url) as client:
        response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"postgres": "ok", "redis": "ok"}


async def probed_twice(
    settings: Settings, shared_resources: Resources, redis: Redis
) -> tuple[JSONResponse, JSONResponse]:
    """Two readiness probes of a service whose Redis is `redis`, which is closed after."""
    service = Service(settings, dataclasses.replace(shared_resources, redis=redis))
    try:
        return await health.readiness(service), await health.readiness(service)
    finally:
        await redis.aclose()


async def test_readiness_is_503_naming_an_unreachable_redis(
    settings: Settings, shared_resources: Resources
) -> None:
    unreachable = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    first, second = await probed_twice(settings, shared_resources, unreachable)
    assert first.status_code == 200, "one failed probe is not yet an outage"
    assert second.status_code == 503
    assert b'"postgres":"ok"' in second.body
    assert b'"redis":"unreachable' in second.body


async def test_readiness_is_503_on_a_replica(
    settings: Settings, shared_resources: Resources, tmp_path: Path
) -> None:
    with (
        embedded_redis(tmp_path / "primary") as primary,
        embedded_redis(tmp_path / "replica", "--replicaof", f"127.0.0.1 {port_of(primary)}") as url,
    ):
        replica = Redis.from_url(url, decode_responses=True)
        assert await replica.ping(), "a replica answers PING"
        first, second = await probed_twice(settings, shared_resources, replica)
    assert first.status_code == 200, "one failed probe is not yet an outage"
    assert second.status_code == 503
    assert b'"redis":"read-only: a replica"' in second.body


async def test_readiness_is_503_within_its_probe_timeout_on_a_redis_that_answers_nothing(
    settings: Settings, shared_resources: Resources, tmp_path: Path
) -> None:
    with redis_server(tmp_path / "redis") as server:
        mute = Redis.from_url(server.url, decode_responses=True)
        assert await mute.ping()
        with server.paused():
            # Each probe gives up after PROBE_TIMEOUT_S; with no bound, ROLE would wait for ever.
            async with asyncio.timeout(3 * health.PROBE_TIMEOUT_S):
                first, second = await probed_twice(settings, shared_resources, mute)
    assert first.status_code == 200, "one failed probe is not yet an outage"
    assert second.status_code == 503
    assert b'"redis":"unreachable: TimeoutError"' in second.body


def test_readiness_changes_only_after_a_streak_of_probes_disagreeing() -> None:
    readiness = Readiness()
    outcomes = [False, True, False, False, True, False, True, True, True]
    reported = [readiness.observe(ok) for ok in outcomes]
    assert reported == [True, True, True, False, False, False, False, True, True]


async def test_readiness_is_503_while_draining(
    settings: Settings, shared_resources: Resources
) -> None:
    service = Service(settings, shared_resources)
    service.start_draining()
    response = await health.readiness(service)
    assert (response.status_code, response.body) == (503, b'{"status":"draining"}')
