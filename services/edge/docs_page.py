"""The API reference page at `/docs` and the edge's `/favicon.ico`, from packaged files.

`/docs` is Redoc rendering `/openapi.json`; Redoc's standalone bundle is vendored in
`services/edge/assets` (see its README) and shipped in the wheel, so the page loads nothing from
another host: it works offline, behind a firewall, and under a Content-Security-Policy of `'self'`
(plus the inline styles and the blob: worker Redoc makes). Links in the page are relative, so it also
works behind a path prefix. Like the browser page, the files are found through the installed package,
never by a path into a source checkout.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

log = logging.getLogger(__name__)

REDOC_VERSION = "2.5.4"  # of assets/redoc.standalone.js
CACHE = "public, max-age=86400"
DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)


def assets_dir() -> Path | None:
    folder = resources.files("services.edge") / "assets"
    if isinstance(folder, Path) and (folder / "docs.html").is_file():
        return folder
    log.warning("the edge's assets are not installed (no services/edge/assets/docs.html): /docs serves nothing")
    return None


def docs_routes() -> list[BaseRoute]:
    """`/docs`, its script and `/favicon.ico` (before the browser page's catch-all mount)."""
    folder = assets_dir()
    if folder is None:

        async def no_icon(request: Request) -> Response:
            return Response(status_code=204)  # a browser asks for it on every page: never a 404 in the logs

        return [Route("/favicon.ico", no_icon)]

    def serve(path: str, name: str, media_type: str, headers: dict[str, str]) -> Route:
        file = folder / name

        async def endpoint(request: Request) -> Response:
            return FileResponse(file, media_type=media_type, headers=headers)

        return Route(path, endpoint, methods=["GET", "HEAD"])

    return [
        serve(
            "/docs",
            "docs.html",
            "text/html; charset=utf-8",
            {"Content-Security-Policy": DOCS_CSP, "Cache-Control": "no-cache"},
        ),
        serve(
            "/docs/redoc.standalone.js",
            "redoc.standalone.js",
            "text/javascript; charset=utf-8",
            {"Cache-Control": CACHE},
        ),
        serve("/favicon.ico", "favicon.ico", "image/vnd.microsoft.icon", {"Cache-Control": CACHE}),
    ]
