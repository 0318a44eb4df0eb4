"""The Redis client for REDIS_URL: redis-py's cluster client when the server is a node of a Redis
Cluster, else the plain one.

The server itself says which (`INFO cluster`), so one REDIS_URL naming any node of a cluster (as
managed offerings hand out) is enough: the cluster client discovers the other nodes. REDIS_CLUSTER
overrides the answer: `yes` refuses to start against a server that is not a cluster node, `no`
never uses the cluster client.
"""

import logging
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis, RedisCluster

from .settings import ConfigError

log = logging.getLogger(__name__)

RedisClient = Redis | RedisCluster


def cluster_enabled(info: dict[str, Any]) -> bool:
    """Whether an `INFO cluster` reply comes from a node of a Redis Cluster."""
    return str(info.get("cluster_enabled", 0)) == "1"


async def open_redis(url: str, mode: str, **options: Any) -> RedisClient:
    """A client of the server at `url`, of the kind `mode` (REDIS_CLUSTER) and the server call
    for; `options` go to either client. Raises ConfigError when REDIS_CLUSTER=yes names a server
    that is not a cluster node, and redis-py's errors when the server does not answer."""
    node = Redis.from_url(url, **options)
    if mode == "no":
        return node
    try:
        clustered = cluster_enabled(await node.info("cluster"))
    except redis_errors.ResponseError as error:
        # A server or proxy that refuses INFO: only REDIS_CLUSTER=yes can say it is a cluster.
        if mode == "yes":
            clustered = True
        else:
            log.warning("Redis refused INFO cluster (%s): using the plain client", error)
            clustered = False
    except BaseException:
        await node.aclose()
        raise
    if not clustered:
        if mode == "yes":
            await node.aclose()
            where = node.connection_pool.connection_kwargs
            raise ConfigError(
                f"REDIS_CLUSTER=yes, but the server at REDIS_URL ({where.get('host')}:"
                f"{where.get('port')}) is not a Redis Cluster node (INFO cluster says"
                " cluster_enabled:0); set REDIS_CLUSTER=auto or no"
            )
        return node
    await node.aclose()
    cluster = RedisCluster.from_url(url, **options)
    try:
        await cluster.initialize()
    except BaseException:
        await cluster.aclose()
        raise
    return cluster
