"""Redis names: every key and stream the service touches lives under one prefix.

redis-py has no key prefix of its own, so all names are built here. One prefix per deployment
(or per test worker) keeps instances of different services, and parallel test runs, apart.

Every name also carries a hash tag, the part in braces: on a Redis Cluster it alone decides the
key's slot. Keys that one Lua script, pipeline or multi-key command uses together share a tag;
keys of different tags spread over the masters. The prefix stays outside the braces, so one SCAN
for the prefix (on every master) still finds all of a deployment's keys.
"""

import itertools
import re
from dataclasses import dataclass

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

_GLOB_SPECIAL = re.compile(r"([\\*?\[\]])")


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """Builds the prefixed, hash-tagged names of keys and streams."""

    prefix: str

    def key(self, family: str, tag: str, *parts: str) -> str:
        """`<prefix><family>:{<tag>}[:<part>...]`, e.g. key("ratelimit", user_id, action)."""
        return self.prefix + ":".join([family, "{" + tag + "}", *parts])

    def stream(self, partition: int, partitions: int) -> str:
        """The message stream's partition `partition` of `partitions`. Its tag is the first
        `messages.<partition>.<n>` whose slot lies in the partition's equal share of the slot
        space, so the partitions' slots are spaced evenly: on a cluster whose masters hold equal
        ranges of slots (as `redis-cli --cluster create` shares them out), each master gets an
        equal number of partitions whenever the count divides by the number of masters."""
        low = partition * REDIS_CLUSTER_HASH_SLOTS // partitions
        high = (partition + 1) * REDIS_CLUSTER_HASH_SLOTS // partitions
        tags = (f"messages.{partition}.{n}" for n in itertools.count())
        return self.key("stream", next(tag for tag in tags if low <= key_slot(tag.encode()) < high))

    def match(self, start: str = "") -> str:
        """A SCAN pattern for every name starting with `start` (the beginning of one of our
        names; the prefix when not given), and nothing else."""
        return _GLOB_SPECIAL.sub(r"\\\1", start or self.prefix) + "*"
