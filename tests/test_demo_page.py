"""The baked service's demo page, in a real headless Chromium: the browser's own rules apply
(the token travels as a subprotocol, the Origin header is checked)."""

import asyncio
import json
import secrets
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from psycopg import sql

from tests.browser import find_chromium, open_page
from tests.generated_runs import DATABASE_URL, REDIS_URL, clean_environment

pytestmark = pytest.mark.xdist_group("generated-suite")
START_TIMEOUT_S = 30.0

WAIT_FOR_MESSAGE = """
new Promise((resolve, reject) => {
  const log = document.getElementById("log");
  const status = () => document.getElementById("status").textContent;
  const done = () => log.textContent.includes('"type":"message"') && resolve(status());
  new MutationObserver(done).observe(log, { childList: true });
  done();
  setTimeout(() => reject(new Error(`no message; ${status()}: ${log.textContent}`)), 10000);
})
"""

WAIT_FOR_CLOSE = """
new Promise((resolve, reject) => {
  const status = document.getElementById("status");
  const done = () => status.textContent.startsWith("closed") && resolve(status.textContent);
  const watch = { childList: true, characterData: true, subtree: true };
  new MutationObserver(done).observe(status, watch);
  done();
  setTimeout(() => reject(new Error(`still ${status.textContent}`)), 10000);
})
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    """A baked service running as a real process with the demo page on."""

    def __init__(self, project: Path, workdir: Path) -> None:
        self.project = project
        self.package = next((project / "src").iterdir()).name
        self.port = free_port()
        self.schema = f"demo_{secrets.token_hex(4)}"
        self.prefix = f"test:demo{secrets.token_hex(4)}:"
        self.key = workdir / "signing-key.json"
        self.env = {"PYTHONPATH": str(project / "src")}
        jwks = self.command("keygen", "--private-key", str(self.key))
        self.env |= {
            "DATABASE_URL": DATABASE_URL,
            "DATABASE_SCHEMA": self.schema,
            "REDIS_URL": REDIS_URL,
            "REDIS_PREFIX": self.prefix,
            "AUTH_KEYS": jwks,
            "PORT": str(self.port),
            "SERVE_DEMO": "1",
            "ALLOWED_ORIGINS": f"http://127.0.0.1:{self.port}",
        }

    def command(self, *args: str) -> str:
        """Run `python -m <package> ARGS` and return what it printed."""
        return subprocess.run(
            [sys.executable, "-m", self.package, *args],
            env=clean_environment(**self.env),
            capture_output=True,
            text=True,
            check=True,
            timeout=START_TIMEOUT_S,
        ).stdout.strip()

    def token_for_new_user(self, name: str) -> str:
        user_id = self.command("add-user", name)
        return self.command("token", user_id, "--private-key", str(self.key))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def service(bake: Callable[..., Path], tmp_path: Path) -> Iterator[Service]:
    """The default bake, migrated into its own schema and serving on a free port."""
    running = Service(bake(), tmp_path)
    running.command("migrate")
    process = subprocess.Popen(
        [sys.executable, "-m", running.package, "serve"],
        env=clean_environment(**running.env),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if "Uvicorn running on" in json.loads(line)["message"]:
                break
        else:
            pytest.fail("the service exited before serving")
        yield running
    finally:
        process.terminate()
        process.wait(timeout=START_TIMEOUT_S)
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(running.schema)))
        client = redis.Redis.from_url(REDIS_URL)
        stale = list(client.scan_iter(match=f"{running.prefix}*"))
        if stale:
            client.unlink(*stale)
        client.close()


@pytest.fixture(scope="module")
def chromium() -> str:
    found = find_chromium()
    if found is None:
        pytest.skip("no Chromium here: apt-get install chromium (.ci/run does)")
    return found


def test_demo_page_connects_subscribes_and_receives(
    service: Service, chromium: str, tmp_path: Path
):
    token = service.token_for_new_user("browser")
    url = f"{service.url}/demo#token={token}&channel=room:browser&say=hello%20from%20chromium"

    async def drive() -> str:
        async with open_page(chromium, tmp_path / "profile", url) as page:
            status = await page.evaluate(WAIT_FOR_MESSAGE)
            log = await page.evaluate("document.getElementById('log').textContent")
            await page.screenshot(tmp_path / "demo.png")
            return f"{status}\n{log}"

    seen = asyncio.run(drive())
    assert seen.startswith("connected")
    assert '"data":"hello from chromium"' in seen
    assert '"type":"welcome"' in seen
    assert (tmp_path / "demo.png").read_bytes().startswith(b"\x89PNG")


def test_page_from_a_foreign_origin_is_refused(service: Service, chromium: str, tmp_path: Path):
    token = service.token_for_new_user("elsewhere")
    # Same server, but localhost is not in ALLOWED_ORIGINS: the browser sends that Origin.
    url = f"http://localhost:{service.port}/demo#token={token}"

    async def drive() -> str:
        async with open_page(chromium, tmp_path / "profile", url) as page:
            closed: str = await page.evaluate(WAIT_FOR_CLOSE)
            log: str = await page.evaluate("document.getElementById('log').textContent")
            return f"{closed}\n{log}"

    seen = asyncio.run(drive())
    assert seen.startswith("closed (1006)"), seen
    assert "welcome" not in seen
