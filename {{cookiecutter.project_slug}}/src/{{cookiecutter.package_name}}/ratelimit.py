"""Rate limits: per user in Redis (across connections and instances), per connection in memory.

Per user, a sliding log in one Lua script: the times of the user's recent actions in a sorted
set, those older than the window dropped, a new one admitted only while fewer than `limit`
remain. So no window of `window_s` seconds, wherever it starts, ever holds more than `limit`
actions (a fixed window lets twice the limit through across its boundary), and one atomic round
trip both checks and counts. The clock is Redis's own, the same for every instance.

Per connection, a token bucket over every request: `burst` at once, refilled at `rate` a second.
A refused request counts against the client, and refusals are forgiven at `rate` a second too:
a client refused a whole burst's worth more than that ignores the errors it is sent (4029).
"""

import hashlib
import time
import uuid

from redis import exceptions as redis_errors

from .keys import RedisKeys
from .redisclient import RedisClient

SLIDING_LOG = """
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local window_us = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_us - window_us)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return tonumber(oldest[2]) + window_us - now_us
end
redis.call('ZADD', KEYS[1], now_us, ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(window_us / 1000) + 1)
return -1
"""
SLIDING_LOG_SHA = hashlib.sha1(SLIDING_LOG.encode()).hexdigest()


async def check(
    redis: RedisClient, keys: RedisKeys, user_id: str, action: str, limit: int, window_s: float
) -> float | None:
    """Count one action; None when it is allowed, else the seconds until it would be."""
    arguments = (
        1,
        keys.key("ratelimit", user_id, action),
        int(window_s * 1_000_000),
        limit,
        uuid.uuid4().hex,
    )
    try:
        wait_us: int = await redis.evalsha(SLIDING_LOG_SHA, *arguments)
    except redis_errors.NoScriptError:
        wait_us = await redis.eval(SLIDING_LOG, *arguments)
    return None if wait_us < 0 else wait_us / 1_000_000


class RequestBudget:
    """A connection's token bucket: `burst` requests at once, refilled at `rate` per second;
    and a count of the refusals not yet forgiven, which also fall at `rate` per second."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._refusals = 0.0
        self._updated = time.monotonic()

    def spend(self) -> float | None:
        """Take one request's token; None when there was one, else the seconds until there is."""
        now = time.monotonic()
        elapsed, self._updated = now - self._updated, now
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        # Why forgiven with time, at the refill's pace, rather than reset by the next request
        # granted: a flooder is granted one every 1/rate seconds too, so a reset let it off for
        # ever (100,000 pipelined pings: 98,000 refused, never closed). A client that waits out
        # each retry hint is refused at most once per token, `rate` times a second, which this
        # forgives as fast; one that backs off for longer is forgiven everything. A client
        # refused faster, at `refused` a second, is closed within burst / (refused - rate)
        # seconds: at most 2 * rate requests a second reach a connection that stays open.
        self._refusals = max(0.0, self._refusals - elapsed * self.rate)
        if self._tokens >= 1:
            self._tokens -= 1
            return None
        self._refusals += 1
        return (1 - self._tokens) / self.rate

    @property
    def exhausted(self) -> bool:
        """Refused a whole burst more than it was forgiven: the client ignores the errors."""
        return self._refusals > self.burst
