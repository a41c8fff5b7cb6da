"""`/docs`: the API reference from packaged files only (Redoc vendored, no CDN), and `/favicon.ico`.
A real browser renders the page under its Content-Security-Policy, with no request to another host."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from chatmesh.launcher import Mesh
from services.edge.docs_page import assets_dir

EXTERNAL_URL = re.compile(r"(?:https?:|wss?:)?//", re.IGNORECASE)
CHROMIUM = "/usr/bin/chromium"


async def test_docs_page_and_its_script_are_served_from_the_package(http: httpx.AsyncClient) -> None:
    page = await http.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert not EXTERNAL_URL.search(html), "the page must load nothing from another host"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    spec_url = re.search(r'<redoc spec-url="([^"]+)"', html)[1]  # type: ignore[index]
    script_url = re.search(r'<script src="([^"]+)"', html)[1]  # type: ignore[index]
    base = str(page.url)
    spec = await http.get(urljoin(base, spec_url))  # relative links: also right behind a path prefix
    assert spec.status_code == 200 and spec.json()["openapi"].startswith("3.")
    script = await http.get(urljoin(base, script_url))
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    folder = assets_dir()
    assert folder is not None and script.content == (folder / "redoc.standalone.js").read_bytes()
    assert b"Redoc" in script.content[:2000] or b"redoc" in script.content[:2000]


async def test_favicon_is_an_icon_not_a_404(http: httpx.AsyncClient) -> None:
    reply = await http.get("/favicon.ico")
    assert reply.status_code == 200 and reply.headers["content-type"] == "image/vnd.microsoft.icon"
    assert reply.content[:4] == b"\x00\x00\x01\x00"  # an ICO file


@pytest.mark.skipif(os.environ.get("CHAT_SKIP_BROWSER") == "1", reason="CHAT_SKIP_BROWSER=1")
async def test_a_browser_renders_the_reference_offline(mesh: Mesh) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    from tests.test_web import CHROMIUM_ARGS  # the browser as the page's own tests launch it

    assert Path(CHROMIUM).exists(), "apt-get install chromium (scripts/test.sh does)"
    edge = urlsplit(mesh.edge_url).netloc
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            hosts: set[str] = set()
            problems: list[str] = []
            page.on("request", lambda r: hosts.add(urlsplit(r.url).netloc) if r.url.startswith("http") else None)
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            await page.goto(f"{mesh.edge_url}/docs")
            # An operation's summary, from the proto comment, rendered by Redoc from /openapi.json.
            await page.get_by_role("heading", name="Send a message to a conversation").wait_for(timeout=20_000)
            if shot := os.environ.get("CHAT_DOCS_SCREENSHOT"):
                await page.screenshot(path=shot)
            assert hosts == {edge}, hosts
            assert not problems, problems  # a CSP violation would show here
        finally:
            await browser.close()
