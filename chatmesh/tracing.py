"""OpenTelemetry tracing: one trace per request, from the edge through the services to fan-out.

Each process calls `setup(service, settings)` from its `__main__`. Off (the default without any OTEL
setting, or with CHAT_TRACING=0) nothing is installed: no interceptor, no patched driver, and the
helpers below answer None or an empty list after one check, so an untraced mesh pays nothing. On, the
process gets a TracerProvider named after it (`service.name`), exporting as the standard variables
say (OTEL_TRACES_EXPORTER: `otlp`, the default, `console` or `none`; OTEL_EXPORTER_OTLP_ENDPOINT,
OTEL_EXPORTER_OTLP_PROTOCOL `grpc` or `http/protobuf`), and spans for:

- gRPC, both sides (the official aio interceptors; `server_interceptors`, `client_interceptors`), W3C
  `traceparent` in the call metadata. Health, reflection and the long-lived streams are left out:
  a span as long as a connection is no request's.
- REST at the edge (the ASGI middleware, `http_middleware`, named by route template) and each
  WebSocket frame the edge handles (`frame_span`): a send's span covers its queueing and its call.
- PostgreSQL (psycopg) and Redis calls made while serving a traced request.
- The asynchronous hops of an event: the writer's traceparent rides in the outbox row
  (`traceparent()`, only when a span is recording), the relay's publish span in the stream entry,
  and fan-out continues the trace (`continue_trace`). So one send is one trace: edge, SendMessage,
  its SQL, the relay's publish and the fan-out into inboxes.

Which requests are traced: a trace starts only at a SERVER span (a REST request, a WebSocket frame, a
gRPC call from outside the mesh), for OTEL_TRACES_SAMPLER_ARG of them (default all); everything else
follows its parent. So a background loop's polling (the relay's SELECT, fan-out's blocking read, the
hub's reads) starts no trace of its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Container, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, Span, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    import grpc
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from starlette.middleware import Middleware

    from chatmesh.config import Settings

# Calls that get no span: probes, reflection, and streams that live as long as a connection (the
# edge's event and presence streams, a socket's subscription) or carry bytes (attachment content).
# SendMessages carries many users' sends: each send continues its own trace instead (its traceparent).
UNTRACED_METHODS = (
    "SendMessages",
    "StreamEvents",
    "SubscribeEvents",
    "StreamPresenceEvents",
    "WriteAttachmentContent",
    "ReadAttachmentContent",
)
UNTRACED_PATHS = ("/healthz", "/readyz", "/metrics")

_propagator = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None  # None: tracing is off in this process
_tracer: Tracer | None = None


def setup(service: str, settings: Settings) -> bool:
    """Turn tracing on for this process when the settings say so (CHAT_TRACING, or an OTEL exporter
    configured): a provider named `service`, its exporters, and the psycopg and Redis instrumentation.
    Call it before any pool, client or channel is made. Returns whether tracing is on."""
    if not settings.tracing:
        return False
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = new_provider(service)
    for exporter in _exporters():
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # flushed at exit by the SDK's own atexit hook
    use(provider)
    PsycopgInstrumentor().instrument(tracer_provider=provider, skip_dep_check=True)
    RedisInstrumentor().instrument(tracer_provider=provider, skip_dep_check=True)
    return True


def new_provider(service: str) -> TracerProvider:
    """A provider for `service` with the mesh's sampler (requests only, see the module docstring)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    ratio = float(os.environ.get("OTEL_TRACES_SAMPLER_ARG") or 1.0)
    return TracerProvider(
        resource=Resource.create({"service.name": service, "service.namespace": "chatmesh"}),
        sampler=ParentBased(root=_RequestsOnly(TraceIdRatioBased(ratio))),
    )


def use(provider: TracerProvider | None) -> None:
    """Make `provider` this module's (None: off). `setup` calls it; tests call it with a provider of
    their own (an InMemorySpanExporter's) without touching the process's global one."""
    global _provider, _tracer
    _provider = provider
    _tracer = provider.get_tracer("chatmesh") if provider is not None else None


def enabled() -> bool:
    return _tracer is not None


def _exporters() -> list[SpanExporter]:
    """What OTEL_TRACES_EXPORTER names (comma-separated; default `otlp`)."""
    chosen = [name.strip().lower() for name in (os.environ.get("OTEL_TRACES_EXPORTER") or "otlp").split(",")]
    exporters: list[SpanExporter] = []
    for name in chosen:
        if name == "otlp":
            protocol = (
                os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "grpc"
            )
            if protocol == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

                exporters.append(OTLPSpanExporter())
            elif protocol == "http/protobuf":
                from opentelemetry.exporter.otlp.proto.http import trace_exporter as http

                exporters.append(http.OTLPSpanExporter())
            else:
                raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: expected grpc or http/protobuf")
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporters.append(ConsoleSpanExporter())
        elif name != "none":
            raise ValueError(f"OTEL_TRACES_EXPORTER={name!r}: expected otlp, console or none")
    return exporters


class _RequestsOnly(Sampler):
    """Root sampler: a trace starts at a SERVER span only (then by `ratio`), never at a background
    loop's database or Redis call."""

    def __init__(self, ratio: Sampler) -> None:
        self._ratio = ratio

    def should_sample(
        self,
        parent_context: Any,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Any = None,
        links: Any = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        if kind is not SpanKind.SERVER:
            return SamplingResult(Decision.DROP)
        return self._ratio.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"RequestsOnly{{{self._ratio.get_description()}}}"


# gRPC


def _traced_call() -> Callable[[Any], bool]:
    from opentelemetry.instrumentation.grpc import filters

    return filters.negate(
        filters.any_of(
            filters.health_check(),
            filters.service_prefix("grpc.reflection"),
            *(filters.method_name(m) for m in UNTRACED_METHODS),
        )
    )


def server_interceptors() -> list[Any]:
    """The gRPC server's tracing interceptor (first, so the mesh interceptor's work is inside the
    span), or none when tracing is off."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor(tracer_provider=_provider, filter_=_traced_call())]  # type: ignore[no-untyped-call]


def client_interceptors() -> Sequence[grpc.aio.ClientInterceptor]:
    """A channel's tracing interceptors (a client span per call, `traceparent` in its metadata), or
    none when tracing is off."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(
        aio_client_interceptors(
            tracer_provider=_provider,  # type: ignore[no-untyped-call]
            filter_=_traced_call(),
        )
    )


# The edge


def http_middleware(route_of: Callable[[str, str], str]) -> list[Middleware]:
    """The edge's REST tracing (a SERVER span per request, named `METHOD /route/{template}`), or none.
    WebSocket connections pass through: their frames get spans of their own (`frame_span`)."""
    if _provider is None:
        return []
    from starlette.middleware import Middleware

    return [Middleware(_HttpTracing, provider=_provider, route_of=route_of)]


class _HttpTracing:
    def __init__(self, app: Any, provider: TracerProvider, route_of: Callable[[str, str], str]) -> None:
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        self._app = app

        def details(scope: dict[str, Any]) -> tuple[str, dict[str, Any]]:
            route = route_of(scope["method"], scope["path"])
            return f"{scope['method']} {route}", {"http.route": route}

        self._traced = OpenTelemetryMiddleware(
            app,
            excluded_urls=",".join(UNTRACED_PATHS),
            default_span_details=details,
            tracer_provider=provider,
            exclude_spans=["receive", "send"],
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self._traced(scope, receive, send)
        else:
            await self._app(scope, receive, send)


def frame_span(kind: str, known: Container[str]) -> Span | None:
    """A started SERVER span for a WebSocket frame the edge handles (the caller ends it, or runs the
    frame's work under `trace.use_span(span, end_on_exit=True)`), or None when tracing is off. A type
    not in `known` is named `unknown`: a client's made-up types must not name spans."""
    if _tracer is None:
        return None
    kind = kind if kind in known else "unknown"
    return _tracer.start_span(f"WS {kind}", kind=SpanKind.SERVER, attributes={"chat.frame.type": kind})


# Hops through the outbox and the events stream


def traceparent() -> str | None:
    """The current span's W3C traceparent when it is recording, to store with an event; else None
    (tracing off, or a request not sampled), so an untraced write carries nothing."""
    if _tracer is None:
        return None
    span = trace.get_current_span()
    if not span.is_recording():
        return None
    return _format(span)


def continue_trace(
    name: str, parent: str | bytes, kind: SpanKind = SpanKind.INTERNAL, attributes: dict[str, Any] | None = None
) -> Span:
    """A started span continuing the trace an event carried (`parent`, a traceparent); the caller ends
    it. With tracing off in this process it is the parent itself, not recording, so whatever this hop
    passes on (`traceparent_of`) still continues the same trace."""
    carrier = {"traceparent": parent.decode() if isinstance(parent, bytes) else parent}
    context = _propagator.extract(carrier)
    if _tracer is None:
        return NonRecordingSpan(trace.get_current_span(context).get_span_context())
    return _tracer.start_span(name, context=context, kind=kind, attributes=attributes)


def traceparent_of(span: Span) -> bytes:
    """`span`'s traceparent, as the events stream carries it."""
    return _format(span).encode()


def end_all(spans: Sequence[Span]) -> None:
    for span in spans:
        span.end()


def _format(span: Span) -> str:
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"
