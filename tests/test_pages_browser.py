"""Case pages in a real headless browser (Debian's chromium) at phone widths.

The pages allow no scripts, so measurements are made from outside through the Chrome
DevTools Protocol: chromium listens on a port it picks itself (DevToolsActivePort in its
profile directory) and aiohttp's websocket client drives it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from test_pages import LONG_URL, build_pages_app, write_fixture_content

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (apt-get install chromium)"
)

PHONE_HEIGHT = 844
MIN_TAP_TARGET = 44  # px, the common minimum for a comfortable thumb

# Runs inside the page through DevTools (our CSP forbids page scripts, not the debugger).
MEASURE = """
(() => {
  const width = window.innerWidth;
  const background = (el) => {
    for (; el; el = el.parentElement) {
      const c = getComputedStyle(el).backgroundColor;
      if (c !== 'rgba(0, 0, 0, 0)' && c !== 'transparent') return c;
    }
    return 'rgb(255, 255, 255)';
  };
  const look = (selector) => {
    const el = document.querySelector(selector);
    if (!el) return null;
    el.scrollIntoView({block: 'start'});
    const r = el.getBoundingClientRect();
    const style = getComputedStyle(el);
    const x = r.left + Math.min(r.width / 2, 20), y = r.top + Math.min(r.height / 2, 20);
    const hit = document.elementFromPoint(x, y);
    return {left: r.left, right: r.right, top: r.top, bottom: r.bottom,
            width: r.width, height: r.height, visibility: style.visibility,
            display: style.display, opacity: style.opacity,
            onTop: !!hit && (el === hit || el.contains(hit)),
            color: style.color, background: background(el)};
  };
  const sticking_out = [...document.querySelectorAll('body *')]
    .filter((el) => el.getBoundingClientRect().right > width + 0.5)
    .map((el) => el.tagName + '.' + el.className);
  const taps = [...document.querySelectorAll('a.card, .back a, header.site a')]
    .map((el) => el.getBoundingClientRect().height);
  window.scrollTo(0, 0);
  return JSON.stringify({
    innerWidth: width,
    scrollWidth: document.documentElement.scrollWidth,
    bodyScrollWidth: document.body.scrollWidth,
    fontSize: getComputedStyle(document.body).fontSize,
    stickingOut: sticking_out,
    taps: taps,
    title: look('h1'),
    legalPoint: look('#legal-point'),
  });
})()
"""


class DevTools:
    """A minimal CDP session over one websocket: commands by id, events kept for waiting."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.session_id: str | None = None
        self._next_id = 0
        self._events: list[dict[str, Any]] = []

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self.session_id:
            message["sessionId"] = self.session_id
        await self.ws.send_json(message)
        while True:
            reply = await self._receive()
            if reply.get("id") == self._next_id:
                assert "error" not in reply, f"{method}: {reply['error']}"
                return reply["result"]
            self._events.append(reply)

    async def wait_for(self, event: str) -> None:
        while not any(e.get("method") == event for e in self._events):
            self._events.append(await self._receive())
        self._events.clear()

    async def _receive(self) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.ws.receive_str(), timeout=20))

    async def open_page(self) -> None:
        target = await self.send("Target.createTarget", url="about:blank")
        attached = await self.send(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        self.session_id = attached["sessionId"]
        await self.send("Page.enable")

    async def load(self, url: str, width: int, *, media: str = "", dark: bool = False) -> None:
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=PHONE_HEIGHT,
            deviceScaleFactor=2,
            mobile=True,
        )
        scheme = "dark" if dark else "light"
        await self.send(
            "Emulation.setEmulatedMedia",
            media=media,
            features=[{"name": "prefers-color-scheme", "value": scheme}],
        )
        self._events.clear()
        await self.send("Page.navigate", url=url)
        await self.wait_for("Page.loadEventFired")

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"]["value"]

    async def screenshot(self, path: Path) -> None:
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))


@pytest.fixture(scope="module")
def browser_ws_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One headless chromium for the module; yields its browser websocket URL."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    log = (profile.parent / "chromium.log").open("wb")
    process = subprocess.Popen(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-proxy-server",
            "--hide-scrollbars",
            "--mute-audio",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=log,
        stderr=log,
        start_new_session=True,  # its helpers share our new process group, ended together
    )
    try:
        active_port = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not active_port.exists() or len(active_port.read_text().splitlines()) < 2:
            assert process.poll() is None, f"chromium exited; see {log.name}"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.05)
        port, path = active_port.read_text().splitlines()[:2]
        yield f"ws://127.0.0.1:{port}{path}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[TestServer]:
    app = build_pages_app(write_fixture_content(tmp_path / "content"))
    async with TestServer(app, host="127.0.0.1") as test_server:
        yield test_server


@pytest.fixture
async def devtools(browser_ws_url: str) -> AsyncIterator[DevTools]:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(browser_ws_url, max_msg_size=64 * 1024 * 1024) as ws,
    ):
        tools = DevTools(ws)
        await tools.open_page()
        yield tools


def contrast(foreground: str, background: str) -> float:
    """WCAG contrast ratio of two computed `rgb(...)` colours."""

    def luminance(colour: str) -> float:
        channels = [float(v) / 255 for v in colour[colour.index("(") + 1 : -1].split(",")[:3]]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    light, dark = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def assert_readable(box: dict[str, Any] | None, width: int) -> None:
    assert box is not None
    assert box["width"] > 0 and box["height"] > 0
    assert box["display"] != "none" and box["visibility"] == "visible" and box["opacity"] == "1"
    assert box["left"] >= 0 and box["right"] <= width + 0.5  # inside the screen's width
    assert box["top"] < PHONE_HEIGHT and box["bottom"] > 0  # on screen once scrolled to
    assert box["onTop"], "covered by another element"
    assert contrast(box["color"], box["background"]) >= 4.5


@pytest.mark.parametrize("width", [390, 320])
@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
@pytest.mark.parametrize("page", ["", "beta_local", "alpha_newest"], ids=["index", "long", "plain"])
async def test_page_fits_a_phone(
    server: TestServer, devtools: DevTools, tmp_path: Path, page: str, width: int, dark: bool
) -> None:
    await devtools.load(str(server.make_url(f"/cases/{page}")), width, dark=dark)
    seen = json.loads(await devtools.evaluate(MEASURE))

    assert seen["innerWidth"] == width  # the viewport meta is honoured
    assert seen["fontSize"] == "17px"  # the stylesheet passed the CSP hash check
    assert seen["scrollWidth"] <= width and seen["bodyScrollWidth"] <= width
    assert seen["stickingOut"] == []
    assert all(height >= MIN_TAP_TARGET for height in seen["taps"]), seen["taps"]
    assert_readable(seen["title"], width)
    if page:
        assert_readable(seen["legalPoint"], width)

    shot = tmp_path / f"{page or 'index'}-{width}-{'dark' if dark else 'light'}.png"
    await devtools.screenshot(shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_print_stylesheet_hides_navigation_and_shows_urls(
    server: TestServer, devtools: DevTools
) -> None:
    await devtools.load(str(server.make_url("/cases/beta_local")), 390, media="print", dark=True)
    printed = json.loads(
        await devtools.evaluate(
            """JSON.stringify({
              header: getComputedStyle(document.querySelector('header.site')).display,
              back: getComputedStyle(document.querySelector('nav.back')).display,
              color: getComputedStyle(document.body).color,
              background: getComputedStyle(document.body).backgroundColor,
              after: getComputedStyle(document.querySelector('#sources a'), '::after').content,
            })"""
        )
    )
    assert printed["header"] == "none" and printed["back"] == "none"
    assert printed["color"] == "rgb(0, 0, 0)" and printed["background"] == "rgb(255, 255, 255)"
    assert LONG_URL in printed["after"]
