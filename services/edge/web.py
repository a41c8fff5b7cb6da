"""The browser chat page (clients/web) at `/`, and the development sign-in it can use.

The page is plain files served as they are (no build step); CHAT_WEB_ENABLED=0 turns it off. It is
found through the installed package (`services/edge/page`, a link to clients/web in the source tree,
real files in the wheel), never by a path relative to a source checkout, so `pip install .` and the
image serve it as an editable install does. `POST /dev/token`
({"user_id", "display_name"?} -> {"token", "user_id"}) signs a token for any user name with the
mesh's secret: it exists only when CHAT_DEV_LOGIN=1 (`chatmesh up` sets it), never by default, since
it lets anyone be anyone. In production the host application hands the page its token
(`window.CHATMESH_TOKEN` or `#token=` in the URL).
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from chatmesh.auth import sign, user_id_problem
from chatmesh.config import Settings
from services.edge import bounded_json
from services.edge.errors import error_response

log = logging.getLogger(__name__)

DEV_TOKEN_TTL_S = 12 * 3600


def web_routes(settings: Settings) -> list[BaseRoute]:
    """Routes to append after the API's (the page's mount catches every other path)."""
    routes: list[BaseRoute] = []
    if settings.dev_login:
        log.warning("CHAT_DEV_LOGIN is on: POST /dev/token signs a token for any user (development only)")

        async def dev_token(request: Request) -> Response:
            try:
                body = bounded_json.loads(await request.body() or b"{}")
                user_id = str(body.get("user_id", "")).strip()
                name = str(body.get("display_name", "") or "")[:200]
            except (ValueError, AttributeError):
                return error_response(400, "INVALID_JSON", "the body must be a JSON object")
            if (problem := user_id_problem(user_id)) is not None:  # the rule tokens are verified by
                return error_response(400, "INVALID_USER_ID", problem)
            return JSONResponse(
                {"token": sign(settings, user_id, ttl_s=DEV_TOKEN_TTL_S, name=name or None), "user_id": user_id}
            )

        routes.append(Route("/dev/token", dev_token, methods=["POST"]))
    if settings.web_enabled and (folder := page_dir()) is not None:
        routes.append(Mount("/", app=StaticFiles(directory=folder, html=True), name="web"))
    return routes


def page_dir() -> Path | None:
    """The page's folder in the installed `services.edge` package, or None if this installation has none
    (a package imported from a zip file cannot be served from disk either)."""
    folder = resources.files("services.edge") / "page"
    if isinstance(folder, Path) and (folder / "index.html").is_file():
        return folder
    log.warning("the browser page is not installed (no services/edge/page/index.html): / serves nothing")
    return None
