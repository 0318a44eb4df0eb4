"""Liveness and readiness probes, over real HTTP."""

import httpx
from redis.asyncio import Redis

from {{ cookiecutter.package_name }} import health
from {{ cookiecutter.package_name }}.resources import Resources

from harness.server import LiveApp


def http_url(live: LiveApp) -> str:
    return live.url.replace("ws://", "http://", 1)


async def test_liveness_answers_ok(shared_app: LiveApp):
    async with httpx.AsyncClient(base_url=http_url(shared_app)) as client:
        response = await client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_readiness_reports_both_backends(shared_app: LiveApp):
    async with httpx.AsyncClient(base_url=http_url(shared_app)) as client:
        response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"postgres": "ok", "redis": "ok"}


async def test_readiness_is_503_naming_an_unreachable_redis(shared_resources: Resources):
    unreachable = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    broken = Resources(
        shared_resources.db,
        unreachable,
        shared_resources.keys,
        shared_resources.bus,
        shared_resources.keyring,
    )
    try:
        response = await health.readiness(broken)
    finally:
        await unreachable.aclose()
    assert response.status_code == 503
    assert b'"postgres":"ok"' in response.body
    assert b'"redis":"unreachable' in response.body
