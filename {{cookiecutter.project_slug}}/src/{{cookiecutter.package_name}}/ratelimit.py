"""Per-user rate limits kept in Redis, so they hold across reconnects and instances.

Fixed windows: at most `limit` actions per user in each window of `window_s` seconds.
"""

import time

from redis.asyncio import Redis

from .keys import RedisKeys


async def check(
    redis: Redis, keys: RedisKeys, user_id: str, action: str, limit: int, window_s: float
) -> float | None:
    """Count one action; None when it is allowed, else the seconds until the next window."""
    now = time.time()
    window = int(now // window_s)
    key = keys.key("ratelimit", user_id, action, str(window))
    async with redis.pipeline(transaction=False) as pipe:
        pipe.incr(key)
        pipe.expire(key, int(window_s) + 1)
        count, _ = await pipe.execute()
    if count <= limit:
        return None
    return (window + 1) * window_s - now


async def forget(redis: Redis, keys: RedisKeys, user_id: str) -> None:
    """Drop every counter of `user_id`."""
    pattern = keys.match("ratelimit", user_id, "")
    stale = [key async for key in redis.scan_iter(match=pattern, count=1000)]
    if stale:
        await redis.unlink(*stale)
