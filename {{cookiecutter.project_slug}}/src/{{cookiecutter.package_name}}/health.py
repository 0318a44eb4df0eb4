"""Liveness and readiness probes (readiness with hysteresis, see readiness.py)."""

import asyncio
from collections.abc import Awaitable

from redis.asyncio import RedisCluster
from redis.exceptions import ReadOnlyError
from starlette.requests import Request
from starlette.responses import JSONResponse

from .resources import Resources
from .service import Service

PROBE_TIMEOUT_S = 2.0


async def liveness(request: Request) -> JSONResponse:
    """The process is up and serving HTTP."""
    return JSONResponse({"status": "ok"})


async def readiness(service: Service) -> JSONResponse:
    """Postgres and Redis both answer, Redis as a primary, and the service is not draining; else
    503 saying why."""
    if service.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    resources = service.resources
    checks = {"postgres": _postgres(resources), "redis": _redis(resources)}
    results = await asyncio.gather(*(_probe(check) for check in checks.values()))
    report = dict(zip(checks, results, strict=True))
    ready = service.readiness.observe(all(result == "ok" for result in results))
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": report},
        status_code=200 if ready else 503,
    )


async def _postgres(resources: Resources) -> None:
    async with resources.db.connection(timeout=PROBE_TIMEOUT_S) as conn:
        await conn.execute("SELECT 1")


async def _redis(resources: Resources) -> None:
    redis = resources.redis
    if isinstance(redis, RedisCluster):
        # The cluster client sends each key to its slot's primary, wherever that is after a
        # failover: that every primary answers is what counts, and PING asks them all.
        await redis.ping()
        return
    # Not PING, which a replica answers too: a primary demoted by a failover, or a server made a
    # replica (REPLICAOF), refuses every write. ROLE costs about what PING does.
    role, *_ = await redis.role()
    if role != "master":
        raise ReadOnlyError(f"Redis is a {role}")


async def _probe(check: Awaitable[None]) -> str:
    try:
        await asyncio.wait_for(check, PROBE_TIMEOUT_S)
    except ReadOnlyError:
        return "read-only: a replica"
    except Exception as error:
        return f"unreachable: {type(error).__name__}"
    return "ok"
