"""Per-user rate limits kept in Redis, so they hold across reconnects and instances."""

import time

from redis.asyncio import Redis

from .keys import RedisKeys


class RateLimiter:
    """At most `limit` actions per user in each fixed window of `window_s` seconds."""

    def __init__(
        self, redis: Redis, keys: RedisKeys, action: str, limit: int, window_s: float
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._action = action
        self.limit = limit
        self.window_s = window_s

    async def check(self, user_id: str) -> float | None:
        """Count one action; None when allowed, else the seconds until the next window."""
        now = time.time()
        window = int(now // self.window_s)
        key = self._keys.key("ratelimit", self._action, user_id, str(window))
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, int(self.window_s) + 1)
            count, _ = await pipe.execute()
        if count <= self.limit:
            return None
        return (window + 1) * self.window_s - now

    async def forget(self, user_id: str) -> None:
        """Drop every counter of `user_id`."""
        pattern = self._keys.match("ratelimit", self._action, user_id, "")
        stale = [key async for key in self._redis.scan_iter(match=pattern, count=1000)]
        if stale:
            await self._redis.unlink(*stale)
