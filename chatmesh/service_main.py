"""What every gRPC service's `__main__` does besides its own wiring: settings, logging and tracing before
the event loop starts; its schema migrated and its pool opened; the server run on the service's port with
the mesh's identity, TLS, health and metrics; and, after the drain, its background loops stopped and its
clients closed in order, each close attempted even when an earlier one fails.

So a service's `__main__` reads as what it builds, not how a process starts and stops (the edge is
uvicorn's and runs its own way)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any

from psycopg_pool import AsyncConnectionPool

from chatmesh import db, eventloop, logs, tracing
from chatmesh.auth import TokenVerifier
from chatmesh.config import Settings
from chatmesh.grpc_server import Registrar, serve
from chatmesh.readiness import Readiness
from chatmesh.resilience import stop_all
from chatmesh.tls import server_credentials

log = logging.getLogger(__name__)


def run(name: str, main: Callable[[Settings], Coroutine[Any, Any, None]]) -> None:
    """The process: settings from the environment, logs and tracing set up as `name`, then `main` on the
    event loop (uvloop where installed)."""
    settings = Settings.from_env()
    logs.setup(name, settings.log_level)
    tracing.setup(name, settings)
    eventloop.run(main(settings))


async def open_store(
    settings: Settings, name: str, schema: str, migrations: Path, shared_ddl: Sequence[str] = (), *, max_size: int = 10
) -> AsyncConnectionPool:
    """The service's schema brought up to date, then its pool (named after the service)."""
    await db.migrate(settings.database_url, schema, migrations, shared_ddl=shared_ddl)
    return await db.open_pool(settings.database_url, max_size=max_size, name=name)


async def serve_service(
    name: str,
    settings: Settings,
    register: Registrar,
    *,
    stopping: asyncio.Event | None,
    readiness: Readiness,
    end_streams: Callable[[], None] | None = None,
    verifier: TokenVerifier | None = None,
    background: Iterable[asyncio.Task[Any]] = (),
    close: Iterable[Callable[[], Awaitable[object]]] = (),
) -> None:
    """Serve `name` until SIGINT/SIGTERM (or `stopping`), drain, then clean up even when serving failed:
    cancel the `background` tasks and wait for them, then await each of `close` in order (a failing
    one is logged, and the rest still run, so one broken client does not leak the others)."""
    try:
        await serve(
            name,
            settings.listen(name),
            verifier or TokenVerifier(settings),
            register,
            stopping=stopping,
            metrics_port=settings.metrics_port,
            end_streams=end_streams,
            tls=server_credentials(settings),
            health_port=settings.health_port,
            readiness=readiness,
        )
    finally:
        await stop_all(background)
        for step in close:
            try:
                await step()
            except Exception:  # noqa: BLE001 - the process is ending: say what failed, close the rest
                log.exception("%s: closing %s failed", name, getattr(step, "__qualname__", step))
