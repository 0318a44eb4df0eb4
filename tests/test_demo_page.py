"""The baked service's demo page, in a real headless Chromium: the browser's own rules apply
(the token travels as a subprotocol, the Origin header is checked)."""

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.browser import find_chromium, open_page
from tests.served import Service, free_port, serving

pytestmark = pytest.mark.xdist_group("generated-suite")

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


@pytest.fixture
def service(bake: Callable[..., Path], tmp_path: Path) -> Iterator[Service]:
    """The default bake, migrated into its own schema and serving on a free port, with the demo
    page on."""
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    with serving(bake(), tmp_path, port, SERVE_DEMO="1", ALLOWED_ORIGINS=origin) as running:
        yield running


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
