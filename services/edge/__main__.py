"""Run the edge: `python -m services.edge` (uvicorn serving the Starlette app)."""

from __future__ import annotations

import uvicorn

from chatmesh import logs, tracing
from chatmesh.config import Settings
from services.edge.app import create_app
from services.edge.protocols import http_protocol
from services.edge.wire import EdgeWebSocketProtocol
from services.edge.ws import WS_HARD_CAP_FACTOR

KEEP_ALIVE_S = 75


def main() -> None:
    settings = Settings.from_env()
    logs.setup("edge", settings.log_level)
    tracing.setup("edge", settings)
    # HTTP is uvicorn's h11 protocol with the edge's limits on request heads; an upgrade to /ws is
    # handed to wire.py, which serves it with the websockets library's protocol, below ASGI.
    uvicorn.run(
        create_app(settings),
        host=settings.edge_host,
        port=settings.edge_port,
        log_config=None,
        http=http_protocol(settings.time_scale),
        ws=EdgeWebSocketProtocol,
        ws_max_size=settings.ws_max_frame_bytes * WS_HARD_CAP_FACTOR,
        ws_ping_interval=settings.ws_ping_interval_s,  # wire.py's ping wheel reads it (0: no pings)
        timeout_graceful_shutdown=20,
        # An idle keep-alive connection is closed after this long. uvicorn's 5 s equals httpx's and
        # many clients' own reuse limit, so a request sent on a connection 5 s idle could meet the
        # server's close ("Server disconnected without sending a response"). Longer than the
        # clients' limit and the usual load balancer idle timeout (60 s), the client always lets go first.
        timeout_keep_alive=KEEP_ALIVE_S,
        loop="uvloop",
    )


if __name__ == "__main__":
    main()
