"""Serving a gRPC service: identity and errors in one interceptor, health and reflection beside the
business servicer, and a graceful stop on SIGINT/SIGTERM (as uvicorn does it).

Errors leave a service in three kinds, so a caller knows whether to retry: a ChatError with its own
status; an outage (a store, or a service called downstream, is unavailable or past its deadline)
as UNAVAILABLE or DEADLINE_EXCEEDED, which clients retry; and a bug as INTERNAL, which they do not,
logged with its traceback and counted in `chat_grpc_internal_errors_total`."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import faulthandler
import logging
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeAlias, cast

import grpc
import psycopg
import redis.exceptions
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from chatmesh import metrics, reflection, tracing
from chatmesh.auth import AuthError, Identity, TokenVerifier
from chatmesh.config import ENV_VARS, ConfigError
from chatmesh.errors import ERROR_CODE_KEY, ChatError, error_code_of
from chatmesh.logs import request_id_var
from chatmesh.readiness import Readiness
from chatmesh.resilience import SampledLog, is_outage

log = logging.getLogger(__name__)
_outage_log = SampledLog(log)

# The context of any call: types-grpcio makes it generic in the request and response types, which the
# servicers leave open (grpc does not subscript it at run time, hence the string).
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

# An aio streaming handler: an async generator (the sync stubs of grpc type it as an iterator).
_Stream = Callable[..., AsyncIterator[Any]]

identity_var: contextvars.ContextVar[Identity] = contextvars.ContextVar("identity")
_OPEN_PREFIXES = ("/grpc.health.", "/grpc.reflection.")
STOP_GRACE_S = 20.0
OVERRUN_MARGIN_S = 3.0  # after the lame duck and the grace: report what the stop still waits on
# Between NOT_SERVING and the stop: clients that watch health (a service config's healthCheckConfig)
# move their new calls to other replicas, so none arrives as the server stops matching new calls
# (the core cancels calls received but not yet dispatched at that moment).
LAME_DUCK_S = 1.0
# A health name that only the stop turns NOT_SERVING (the liveness probe's); a lost dependency turns
# the overall and business names NOT_SERVING (the readiness probe's) without restarting the pod.
LIVENESS_SERVICE = "liveness"

_S = grpc.StatusCode
# A downstream service's answer that means the same to our caller: passed through, code and message.
_PASSED_THROUGH = frozenset(
    {
        _S.INVALID_ARGUMENT,
        _S.NOT_FOUND,
        _S.ALREADY_EXISTS,
        _S.PERMISSION_DENIED,
        _S.FAILED_PRECONDITION,
        _S.OUT_OF_RANGE,
        _S.RESOURCE_EXHAUSTED,
        _S.ABORTED,
    }
)
# A downstream outage. CANCELLED reaches us only when the downstream server cancelled our call (it was
# stopping): our own cancellation arrives as asyncio.CancelledError. Anything else downstream
# (INTERNAL, UNKNOWN, UNAUTHENTICATED of our service credentials, UNIMPLEMENTED) is a bug here too.
_DOWNSTREAM_OUTAGES = {
    _S.UNAVAILABLE: _S.UNAVAILABLE,
    _S.CANCELLED: _S.UNAVAILABLE,
    _S.DEADLINE_EXCEEDED: _S.DEADLINE_EXCEEDED,
}


def current_identity() -> Identity:
    """The verified caller of the RPC being served."""
    return identity_var.get()


def require_service() -> Identity:
    """Internal RPCs answer only other services (and the edge), never an end user's token."""
    identity = current_identity()
    if not identity.is_service:
        raise ChatError(grpc.StatusCode.PERMISSION_DENIED, "INTERNAL_ONLY", "this RPC is for services only")
    return identity


# Which service may call which RPC with its service token: the real callers (the stubs' call sites,
# held to this table by tests/test_service_identity.py). Every other RPC, and every other service,
# refuses a service token with PERMISSION_DENIED / CALLER_NOT_ALLOWED, before the handler runs. So a
# compromised edge can stream events and report connections, but not read the audit log, and a
# compromised presence can ask who shares conversations and nothing more. User tokens are not
# concerned: internal RPCs refuse them with INTERNAL_ONLY (`require_service`).
SERVICE_CALLERS: dict[str, frozenset[str]] = {
    "/chat.v1.ConversationService/GetMembership": frozenset({"message", "presence"}),  # chatmesh/membership.py
    "/chat.v1.ConversationService/ListContacts": frozenset({"presence"}),
    "/chat.v1.ConversationService/ListConversationIds": frozenset({"message"}),  # the offline buffer
    "/chat.v1.MessageService/ListMessageAuditEntries": frozenset({"conversation"}),  # the audit read path
    "/chat.v1.MessageService/StreamEvents": frozenset({"edge"}),
    "/chat.v1.MessageService/SendMessages": frozenset({"edge"}),  # services/edge/send_batch.py
    "/chat.v1.MessageService/SubscribeEvents": frozenset({"edge"}),  # StreamEvents' one-user form
    "/chat.v1.MessageService/WriteAttachmentContent": frozenset({"edge"}),  # services/edge/uploads.py
    "/chat.v1.MessageService/ReadAttachmentContent": frozenset({"edge"}),
    "/chat.v1.PresenceService/ReportConnections": frozenset({"edge"}),
    "/chat.v1.PresenceService/DropConnections": frozenset({"edge"}),
    "/chat.v1.PresenceService/StreamPresenceEvents": frozenset({"edge"}),
    # The host application's push workers (chatmesh_tools/push_worker.py is the reference one).
    "/chat.v1.NotificationService/StreamNotifications": frozenset({"push"}),
    "/chat.v1.NotificationService/AckNotifications": frozenset({"push"}),
    "/chat.v1.NotificationService/DeadLetterNotifications": frozenset({"push"}),
    # UpsertUser naming another user is for services, but none does so today: listed for none.
}


def allow_service_caller(method: str, identity: Identity) -> None:
    """Refuse a service token on an RPC its service is not listed for (SERVICE_CALLERS)."""
    if identity.is_service and identity.service not in SERVICE_CALLERS.get(method, frozenset()):
        raise ChatError(
            grpc.StatusCode.PERMISSION_DENIED,
            "CALLER_NOT_ALLOWED",
            f"the service {identity.service!r} may not call {method}",
        )


def outage_error(exc: BaseException) -> ChatError | None:
    """UNAVAILABLE or DEADLINE_EXCEEDED for an exception that means a dependency is out or too slow
    (retry later), with a message naming the kind of dependency, never its address; None otherwise."""
    if isinstance(exc, grpc.aio.AioRpcError):
        status = _DOWNSTREAM_OUTAGES.get(exc.code())
        what = "a service this call depends on"
    elif is_outage(exc):
        deadline = isinstance(exc, (TimeoutError, psycopg.errors.QueryCanceled))  # statement_timeout too
        status = _S.DEADLINE_EXCEEDED if deadline else _S.UNAVAILABLE
        what = (
            "the database"
            if isinstance(exc, psycopg.Error)
            else "Redis"
            if isinstance(exc, redis.exceptions.RedisError)
            else "a dependency"
        )
    else:
        return None
    if status is None:
        return None
    state = "did not answer in time" if status == _S.DEADLINE_EXCEEDED else "is unavailable"
    return ChatError(status, status.name, f"{what} {state}; retry")


def status_of(method: str, exc: Exception) -> ChatError:
    """The status a call of `method` answers for `exc`, called while handling it: a downstream answer
    passed through, an outage, or a bug (logged and counted). For the handlers that answer errors per
    item (message.SendMessages) as the interceptor answers a whole call's."""
    if isinstance(exc, ChatError):
        return exc
    if isinstance(exc, grpc.aio.AioRpcError) and exc.code() in _PASSED_THROUGH:
        return ChatError(exc.code(), error_code_of(exc), exc.details() or exc.code().name)
    if (outage := outage_error(exc)) is not None:
        cause = f"{exc.code().name}: {exc.details()}" if isinstance(exc, grpc.aio.AioRpcError) else repr(exc)
        _outage_log.warning(
            f"{method}:{outage.status.name}",
            "%s answered %s: %s (%s)",
            method,
            outage.status.name,
            outage.message,
            cause,
        )
        return outage
    log.exception("unhandled error in %s", method)
    metrics.GRPC_INTERNAL_ERRORS.labels(*metrics.service_of(method)).inc()
    return ChatError(_S.INTERNAL, "INTERNAL", f"internal error (request {request_id_var.get()})")


class MeshInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates every business call, binds its request id, and maps errors to statuses."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self._verifier = verifier
        self._methods: set[str] = set()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        if handler is None or details.method.startswith(_OPEN_PREFIXES):
            return handler
        if details.method not in self._methods:  # bounded: only methods with a handler get here
            self._methods.add(details.method)
            metrics.GRPC_INTERNAL_ERRORS.labels(*metrics.service_of(details.method))  # exported as 0 now
        metadata = {k: v for k, v in details.invocation_metadata or () if isinstance(v, str)}
        scope = _CallScope(self._verifier, metadata, details.method)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                scope.wrap_unary(handler.unary_unary), handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                scope.wrap_stream(cast(_Stream, handler.unary_stream)),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                scope.wrap_stream(cast(_Stream, handler.stream_stream)),
                handler.request_deserializer,
                handler.response_serializer,
            )
        return handler


class _CallScope:
    def __init__(self, verifier: TokenVerifier, metadata: dict[str, str], method: str) -> None:
        self._verifier = verifier
        self._metadata = metadata
        self._method = method

    async def _enter(self, context: Context) -> None:
        request_id_var.set(self._metadata.get("x-request-id") or uuid.uuid4().hex)
        try:
            identity = await self._verifier.averify_bearer(self._metadata.get("authorization"))
        except AuthError as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"invalid credentials: {exc}")
        allow_service_caller(self._method, identity)  # a ChatError here is answered like a handler's
        identity_var.set(identity)

    async def _fail(self, context: Context, exc: ChatError) -> None:
        context.set_trailing_metadata(((ERROR_CODE_KEY, exc.code),))
        await context.abort(exc.status, exc.message)

    def _status_of(self, exc: Exception) -> ChatError:
        """Called while handling `exc`: a downstream answer passed through, an outage, or a bug."""
        return status_of(self._method, exc)

    @contextlib.asynccontextmanager
    async def _call(self, context: Context) -> AsyncIterator[None]:
        """One call's life, unary or streaming: identity in, errors out as statuses, metrics."""
        started, cancelled = time.perf_counter(), False
        try:
            try:
                await self._enter(context)
                yield
            except ChatError as exc:
                await self._fail(context, exc)
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:  # noqa: BLE001 - mapped here, so none escapes as UNKNOWN
                await self._fail(context, self._status_of(exc))
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            metrics.observe_grpc(self._method, "CANCELLED" if cancelled else _code_name(context), started)

    def wrap_unary(self, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def unary(request: Any, context: Context) -> Any:
            async with self._call(context):
                return await behavior(request, context)

        return unary

    def wrap_stream(self, behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            async with self._call(context):
                async for response in behavior(request, context):
                    yield response

        return stream


def _code_name(context: Context) -> str:
    """The status the call ended with, as its name (`OK` when the handler returned normally)."""
    code: grpc.StatusCode | int | None = context.code()  # the stubs say StatusCode; grpc also gives None or int
    if code is None:
        return "OK"
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    return next((str(c.name) for c in grpc.StatusCode if c.value[0] == code), str(code))


Registrar = Callable[[grpc.aio.Server], Iterable[str]]


async def serve(
    name: str,
    listen: str,
    verifier: TokenVerifier,
    register: Registrar,
    *,
    stopping: asyncio.Event | None = None,
    ready: Callable[[int], None] | None = None,
    readiness: Readiness | None = None,
    metrics_port: int | None = None,
    end_streams: Callable[[], None] | None = None,
    tls: grpc.ServerCredentials | None = None,
    health_port: int | None = None,
) -> None:
    """Run a gRPC server until SIGINT/SIGTERM (or `stopping` is set), then drain it.

    `register` adds the business servicers and returns their full service names, which the health
    service reports SERVING and reflection lists. On stop, health turns NOT_SERVING first so load
    balancers move away, then in-flight calls get STOP_GRACE_S to finish.

    `readiness` (optional) turns the overall and business health names NOT_SERVING while a
    dependency is lost and SERVING again when it returns; `metrics_port` (optional) serves
    Prometheus metrics on the listen host. `end_streams` (optional) ends the service's long-lived
    streams after the lame-duck pause: their clients resume on another replica at once, and the
    process exits then, instead of holding them until the grace period runs out.

    `tls` (chatmesh.tls.server_credentials; None: plaintext) makes the port mTLS-only: a client
    without a certificate from the mesh's CA cannot connect. `health_port` (optional) serves the same
    health service, and nothing else, in plaintext on the listen host, for kubelet probes, which
    cannot present a certificate.
    """
    if not verifier.service_callers:  # every gRPC service answers some service: without keys it cannot
        raise ConfigError(f"CHAT_SERVICE_PUBLIC_KEYS is not set: {ENV_VARS['CHAT_SERVICE_PUBLIC_KEYS']}")
    # Tracing's interceptor first (none when off), so the mesh interceptor's work is inside its span.
    server = grpc.aio.server(
        interceptors=[*tracing.server_interceptors(), MeshInterceptor(verifier)],
        options=[
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            # Clients re-resolve (a headless Service's DNS) when a connection ends; ending each one after
            # a few minutes (GOAWAY: open streams carry on, new calls reconnect) lets round_robin find new pods.
            ("grpc.max_connection_age_ms", 300_000),
        ],
    )
    names = list(register(server))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable(server, [*names, health.SERVICE_NAME])  # v1 and v1alpha
    port = server.add_secure_port(listen, tls) if tls else server.add_insecure_port(listen)
    await server.start()
    health_server = await _start_health_only(health_servicer, listen, health_port)
    for service_name in ["", *names, LIVENESS_SERVICE]:
        await health_servicer.set(service_name, health_pb2.HealthCheckResponse.SERVING)
    metrics_server = metrics.start_metrics_server(listen, metrics_port)
    watcher = (
        asyncio.create_task(readiness.watch(_readiness_to_health(health_servicer, ["", *names]))) if readiness else None
    )
    log.info("%s serving on %s (port %d, %s)", name, listen, port, "mTLS" if tls else "plaintext")
    if ready:
        ready(port)
    by_signal = stopping is None  # the process ends with this stop (not a service inside a test)
    stopping = stopping or stop_on_signals()
    await stopping.wait()
    log.info("%s stopping: draining in-flight calls", name)
    if by_signal:
        _report_overrun_after(LAME_DUCK_S + STOP_GRACE_S + OVERRUN_MARGIN_S)
    if watcher:
        watcher.cancel()
    await health_servicer.enter_graceful_shutdown()
    await asyncio.sleep(LAME_DUCK_S)
    if end_streams:
        end_streams()
    await server.stop(STOP_GRACE_S)
    if health_server:
        await health_server.stop(None)
    if metrics_server:
        metrics_server.close()


def _report_overrun_after(seconds: float) -> None:
    """A process whose stop overruns its grace has a bug somewhere (a call or task that ignores cancellation, a
    blocking call on the loop): say what the process is waiting on instead of hanging silently, once,
    after `seconds`. The asyncio tasks' stacks come from the loop; every thread's stack from
    faulthandler, which still writes when the loop itself is blocked."""
    faulthandler.dump_traceback_later(seconds + 1, exit=False)

    def report() -> None:
        stuck = [task for task in asyncio.all_tasks() if not task.done()]
        log.error("still running %.0f s after the stop began: %d tasks", seconds, len(stuck))
        for task in stuck:
            log.error("task %s waits in:\n%s", task.get_name(), _awaiting(task))

    asyncio.get_running_loop().call_later(seconds, report)


def _awaiting(task: asyncio.Task[Any]) -> str:
    """Where a suspended task waits, innermost last: its coroutine's await chain (a task's own stack
    shows only the outermost frame of a suspended coroutine)."""
    lines: list[str] = []
    awaited: Any = task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
        if frame is not None:
            lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        else:
            lines.append(f"  awaiting {awaited!r}")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)
    return "\n".join(lines)


async def _start_health_only(
    servicer: health.aio.HealthServicer, listen: str, port: int | None
) -> grpc.aio.Server | None:
    """A plaintext server of the one health servicer (the same statuses), on the listen host."""
    if port is None:
        return None
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    host = listen.rsplit(":", 1)[0] or "0.0.0.0"
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    log.info("health (plaintext, probes only) on %s:%d", host, port)
    return server


def _readiness_to_health(servicer: health.aio.HealthServicer, names: list[str]) -> Callable[[bool], Awaitable[None]]:
    async def on_change(ready: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for service_name in names:
            await servicer.set(service_name, status)

    return on_change


def stop_on_signals() -> asyncio.Event:
    """An event set by the first SIGINT/SIGTERM; a second one exits at once."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()

    def _on_signal() -> None:
        if stopping.is_set():
            raise SystemExit(1)
        stopping.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _on_signal)
    return stopping
