"""Run a service's main coroutine on uvloop when it is installed (grpcio's asyncio API, psycopg and
redis-py all run on it), else on the standard event loop. uvloop's loop does the same work in less
CPU per call: measured with `chatmesh bench` (docs/performance.md). CHAT_EVENT_LOOP=asyncio picks the
standard loop anyway (to compare, or to rule uvloop out)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    if os.environ.get("CHAT_EVENT_LOOP", "uvloop") == "asyncio":
        return asyncio.run(main)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.run(main)
    return uvloop.run(main)
