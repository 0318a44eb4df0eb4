"""CPU time used by the Postgres and Redis servers the suites talk to, read before and after a run.

Redis reports its own (INFO cpu). Postgres does not, so it is read from /proc: the postmaster's
CPU time plus that of the backends it has reaped (a run's connections end with the run), which
needs the server on this machine. Either reads None where it cannot be had. They are whole
servers' figures: on a machine where other runs use the same servers, they count those too.
"""

import os
from pathlib import Path

import psycopg
import redis

from tests.generated_runs import DATABASE_URL, REDIS_URL

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def redis_cpu_s(url: str = REDIS_URL) -> float | None:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        try:
            cpu = client.info("cpu")
        finally:
            client.close()
    except redis.RedisError:
        return None
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def postgres_cpu_s(url: str = DATABASE_URL) -> float | None:
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            data_directory = conn.execute("SHOW data_directory").fetchone()
    except psycopg.Error:
        return None
    try:
        pid = int((Path(data_directory[0]) / "postmaster.pid").read_text().split()[0])
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except (OSError, ValueError, TypeError, IndexError):
        return None
    # utime, stime, and the reaped children's cutime, cstime: fields 14-17 of /proc/<pid>/stat.
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS
