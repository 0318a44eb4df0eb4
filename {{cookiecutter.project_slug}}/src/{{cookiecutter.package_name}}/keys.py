"""Redis names: every key and stream the service touches lives under one prefix.

redis-py has no key prefix of its own, so all names are built here. One prefix per deployment
(or per test worker) keeps instances of different services, and parallel test runs, apart.
"""

import re
from dataclasses import dataclass

_GLOB_SPECIAL = re.compile(r"([\\*?\[\]])")


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """Builds the prefixed names of keys and streams."""

    prefix: str

    def key(self, *parts: str) -> str:
        """A plain key, e.g. key("ratelimit", user_id)."""
        return self.prefix + ":".join(parts)

    def stream(self, name: str) -> str:
        """A Redis stream."""
        return self.key("stream", name)

    def match(self, *parts: str) -> str:
        """A SCAN pattern for every name starting with key(*parts), and nothing else."""
        return _GLOB_SPECIAL.sub(r"\\\1", self.key(*parts)) + "*"
