"""Configuration from environment variables, read once at start and typed.

Every variable the mesh reads is listed in ENV_VARS below (and in the README); a missing required one
fails at start with its name, never halfway through a request.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

# Default ports: fixed, documented, and clear of a PostgreSQL (5432) or Redis (6379) already running.
DEFAULT_PORTS = {
    "conversation": 50151,
    "message": 50152,
    "presence": 50153,
    "edge": 8780,
    "postgres": 55432,
    "redis": 56379,
}

ENV_VARS: dict[str, str] = {
    "CHAT_DATABASE_URL": "PostgreSQL URL (conversation and message services). Unset: `chatmesh up` starts an "
    "embedded one.",
    "CHAT_REDIS_URL": "Redis URL (all services). Unset: `chatmesh up` starts an embedded one.",
    "CHAT_REDIS_PREFIX": "Prefix of every Redis key, so several meshes or test runs share one Redis (default `chat`).",
    "CHAT_JWT_SECRET": "HS256 secret that signs and verifies user tokens when no JWKS is set (development, the base "
    "manifests); never service tokens. Not needed with CHAT_JWT_JWKS_URL.",
    "CHAT_JWT_ALGORITHMS": "Comma-separated algorithms accepted (default `HS256`); never taken from the token.",
    "CHAT_JWT_ISSUER": "Required `iss` claim, when set.",
    "CHAT_JWT_AUDIENCE": "Required `aud` claim, when set.",
    "CHAT_JWT_JWKS_URL": "JWKS URL of the identity provider (production): user tokens are verified with its key "
    "named by `kid` (the set is refetched every 5 minutes, so a withdrawn key is refused within "
    "5 minutes, remembered tokens included).",
    "CHAT_SERVICE_KEY_FILE": "PEM file of this process's Ed25519 private key, which signs its service tokens "
    "(every service and the edge; the launcher of `chatmesh up` makes them).",
    "CHAT_SERVICE_PUBLIC_KEYS": "Folder of the callers' Ed25519 public keys, `<service>.pub` each (and "
    "`<service>.<label>.pub` during a rotation): a gRPC service takes a token as a "
    "service's only if that service's key verifies it. Required by conversation, "
    "message and presence; the edge needs none.",
    "CHAT_SERVICE_KEYRING": "`chatmesh up` and the tests only: the folder of development key pairs the launcher "
    "makes and hands each process its own of (default `<data dir>/service-keys`).",
    "CHAT_TLS_CERT_FILE": "PEM certificate (chain) of this process for mTLS between services; with CHAT_TLS_KEY_FILE "
    "and CHAT_TLS_CA_FILE. Unset: plaintext gRPC.",
    "CHAT_TLS_KEY_FILE": "PEM private key of CHAT_TLS_CERT_FILE.",
    "CHAT_TLS_CA_FILE": "PEM CA bundle that peers' certificates must chain to (servers require client certificates).",
    "CHAT_TLS_SERVER_NAME": "Name the services' certificates are checked against instead of the target's host "
    "(unset: the host, e.g. `conversation-headless`; the launcher uses `localhost`).",
    "CHAT_HEALTH_PORT": "Port of a plaintext gRPC listener serving only grpc.health.v1, on the listen host, for "
    "kubelet probes, which cannot speak TLS (unset: none).",
    "CHAT_CORS_ORIGINS": "Comma-separated origins allowed by CORS at the edge (`*` for any; unset: no CORS).",
    "CHAT_WS_ALLOWED_ORIGINS": "Comma-separated origins allowed to open a WebSocket (`*` for any; unset: same host "
    "only). Requests without an Origin (non-browser clients) are allowed.",
    "CHAT_RATE_REST": "Per-user REST requests allowed, as `count/seconds` (default `1200/60`; `0` disables).",
    "CHAT_RATE_MESSAGES": "Per-user message sends allowed (REST and WebSocket), as `count/seconds` (default `600/60`).",
    "CHAT_WS_MAX_SOCKETS": "Concurrent WebSockets per user, across every edge replica (default 20).",
    "CHAT_WS_MAX_FRAMES_PER_S": "Frames a WebSocket may send per second before its frames are refused (default 50).",
    "CHAT_WS_MAX_FRAME_BYTES": "Largest WebSocket frame answered with an error (default 65536); frames over 16 times "
    "that close the socket with 1009.",
    "CHAT_LISTEN_ADDR": "Where a gRPC service listens (default `127.0.0.1:<its port>`).",
    "CHAT_CONVERSATION_TARGET": "gRPC target of the conversation service (default `127.0.0.1:50151`).",
    "CHAT_MESSAGE_TARGET": "gRPC target of the message service (default `127.0.0.1:50152`).",
    "CHAT_PRESENCE_TARGET": "gRPC target of the presence service (default `127.0.0.1:50153`).",
    "CHAT_EDGE_HOST": "Edge HTTP/WebSocket bind host (default `127.0.0.1`).",
    "CHAT_EDGE_PORT": "Edge HTTP/WebSocket port (default 8780).",
    "CHAT_WS_COMPRESSION": "`1` offers permessage-deflate on WebSockets (default `0`: off; it costs tens of KB of "
    "zlib state per socket and CPU per frame, for small JSON frames that gain little).",
    "CHAT_WS_SEND_QUEUE": "Frames a WebSocket may have waiting (a catch-up burst included) before it is "
    "disconnected as too slow (default 10000, the inbox bound).",
    "CHAT_WS_SEND_TIMEOUT": "Seconds one WebSocket write may wait on a client that is not reading before the "
    "socket is closed as too slow (default 10).",
    "CHAT_WS_SEND_QUEUE_BYTES": "Bytes a WebSocket may have waiting (default 8388608, 8 MiB: a catch-up of "
    "10,000 typical events fits); a socket that fills it takes no more events, writes "
    "out what it has and is closed with 4008 (it resumes from its token).",
    "CHAT_WS_SEND_BUDGET_BYTES": "Bytes all of an edge's WebSockets may have waiting together; over it, the slowest "
    "are closed with 4008 (default 268435456, 256 MiB, against the edge's 1 GiB limit).",
    "CHAT_WS_MIN_DRAIN_BYTES_PER_S": "Slowest a WebSocket with a backlog may drain; below it over a whole "
    "CHAT_WS_DRAIN_WINDOW_S it is closed with 4008 (default 16384; 0 disables).",
    "CHAT_WS_DRAIN_WINDOW_S": "Seconds over which a backlogged WebSocket's drain rate is measured (default 5).",
    "CHAT_WS_PING_INTERVAL_S": "Seconds between the edge's pings on each WebSocket; a socket that has not answered "
    "one when the next is due is closed with 1011 (default 20; `0`: no pings).",
    "CHAT_WS_RATE_PRESENCE": "presence:online/offline frames per WebSocket, as `count/seconds` (default `10/10`).",
    "CHAT_WS_RATE_TYPING": "chat:typing frames per WebSocket, as `count/seconds` (default `30/10`).",
    "CHAT_WS_RATE_RECEIPTS": "chat:message_delivered/chat:message_read frames per WebSocket, as `count/seconds` "
    "(default `300/10`).",
    "CHAT_WS_RATE_ACKS": "Event ids acknowledged by events_ack per WebSocket, as `count/seconds` (default "
    "`20000/10`: two full catch-ups at once).",
    "CHAT_WS_PRESENCE_INTERVAL_S": "At most one presence:online/offline per user per edge goes to the presence "
    "service in this many seconds; the last one wins (default 1).",
    "CHAT_PRESENCE_TTL_S": "Seconds a connection stays online without a heartbeat from its edge (default 30; "
    "scaled by CHAT_TIME_SCALE).",
    "CHAT_PRESENCE_ANNOUNCE_INTERVAL_S": "At most one status announcement per user in this many seconds, across "
    "replicas; the last state wins (default 2; scaled by CHAT_TIME_SCALE).",
    "CHAT_FANOUT_PARTITIONS": "K, the number of events streams (partitions) fan-out is spread over (default 8): a "
    "conversation's events all go to partition crc32(id) mod K, and each message replica fans out about K/N of "
    "them. Every service of a mesh must use the same K; change it only as docs/architecture.md says.",
    "CHAT_TIME_SCALE": "Multiplier on every delay and timeout of the delivery path (default 1; tests use less).",
    "CHAT_LOG_LEVEL": "Log level (default INFO).",
    "CHAT_TRACING": "OpenTelemetry tracing: `1` on, `0` off; unset: on when OTEL_TRACES_EXPORTER (not `none`) or "
    "an OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set. "
    "Exports as the standard OTEL_* variables say (chatmesh/tracing.py).",
    "CHAT_EVENT_LOOP": "`asyncio` runs the services on the standard event loop instead of uvloop (default "
    "`uvloop`; to compare, or to rule uvloop out).",
    "CHAT_DATA_DIR": "`chatmesh up`'s data folder, where every other command finds the running mesh (default "
    "`./.chatmesh`; also `--data-dir`).",
    "CHAT_BENCH_KEEP": "`chatmesh bench` only: any value keeps the temporary folder of the mesh it started (its "
    "logs and data) instead of removing it.",
    "CHAT_MAX_MESSAGE_CHARS": "Longest message text the message service accepts, in characters (default 4000).",
    "CHAT_MAX_GROUP_SIZE": "Most participants a group conversation may have, its creator included (default 1000).",
    "CHAT_WEB_ENABLED": "Serve the browser chat page (clients/web) at the edge's `/` (default `1`; `0` turns it off).",
    "CHAT_DEV_LOGIN": "Development only: `1` lets the edge sign a token for any user name at `POST /dev/token` "
    "(the page's sign-in). Never set it in production (default `0`; `chatmesh up` sets it).",
    "CHAT_METRICS_PORT": "Port of a gRPC service's Prometheus /metrics, on its listen host (unset: none; the edge "
    "serves /metrics itself).",
    "CHAT_ATTACHMENT_BACKEND": "Where attachment bytes live: `filesystem` (default; served by the edge) or `s3` "
    "(presigned URLs: the bytes never pass through the mesh).",
    "CHAT_ATTACHMENT_DIR": "The filesystem backend's folder, on the message service (default "
    "`$CHAT_DATA_DIR/attachments`, i.e. `./.chatmesh/attachments`).",
    "CHAT_ATTACHMENT_MAX_BYTES": "Largest attachment accepted, in bytes (default 26214400, 25 MiB): 413 beyond it.",
    "CHAT_ATTACHMENT_TYPES": "Comma-separated allow-list of sniffed MIME types (`type/*` for a family); others are "
    "415. Default: common images, audio, video, PDF, plain text, ZIP and unrecognized bytes "
    "(application/octet-stream).",
    "CHAT_ATTACHMENT_MAX_PIXELS": "Largest image accepted, in pixels (default 50000000): decompression bombs are "
    "refused.",
    "CHAT_ATTACHMENT_TTL_S": "Seconds an upload may stay unattached before it is collected (default 86400; scaled "
    "by CHAT_TIME_SCALE).",
    "CHAT_ATTACHMENT_URL_TTL_S": "Seconds a signed upload or download link stays valid (default 300; scaled by "
    "CHAT_TIME_SCALE).",
    "CHAT_ATTACHMENT_URL_SECRET": "Key of the mesh's own signed links (filesystem backend), shared by the message "
    "replicas. Unset: derived from CHAT_JWT_SECRET (required without one).",
    "CHAT_S3_ENDPOINT_URL": "S3-compatible endpoint the message service talks to (unset: AWS S3 of CHAT_S3_REGION).",
    "CHAT_S3_PUBLIC_ENDPOINT_URL": "Endpoint written into presigned URLs, when clients reach the store by another "
    "address than the mesh (default: CHAT_S3_ENDPOINT_URL).",
    "CHAT_S3_BUCKET": "Bucket of the s3 backend (required with it).",
    "CHAT_S3_REGION": "Region of the bucket (default `us-east-1`).",
    "CHAT_S3_ACCESS_KEY_ID": "Access key of the s3 backend (unset: botocore's usual chain, e.g. a pod identity).",
    "CHAT_S3_SECRET_ACCESS_KEY": "Secret key of CHAT_S3_ACCESS_KEY_ID.",
    "CHAT_NOTIFY_DELAY_S": "Seconds a recipient's devices have to acknowledge a message (delivered) before a push "
    "notification is recorded for them (default 5; scaled by CHAT_TIME_SCALE).",
    "CHAT_NOTIFY_COLLAPSE_S": "At most one notification per user and conversation in this many seconds: later "
    "messages collapse into the next one, with a count (default 30; scaled).",
    "CHAT_NOTIFY_CLAIM_S": "Seconds a streamed notification may stay unacknowledged before it goes to another push "
    "worker of its group (default 60; scaled): longer than a worker's retries.",
    "CHAT_NOTIFY_INCLUDE_TEXT": "`1` puts the latest message's text (200 characters at most) in notifications; "
    "default `0`: conversation, sender and count only.",
    "CHAT_PUSH_WEBHOOK_SECRET": "`chatmesh push-worker`: the key of the HMAC-SHA256 signature on every webhook "
    "POST (required by the worker).",
    "CHAT_CALL_RING_TIMEOUT_S": "Seconds a call rings unanswered before it ends with reason timeout (default 45; "
    "scaled by CHAT_TIME_SCALE).",
    "CHAT_CALL_MAX_S": "Longest a call's state is kept, ringing or accepted, when nobody hangs it up (a client and "
    "its edge both gone): after it the users are no longer busy (default 14400; scaled).",
    "CHAT_ICE_SERVERS": 'STUN/TURN servers handed to clients for calls, as JSON: a list of {"urls": string or list, '
    '"username"?, "credential"?} (default `[]`: host candidates only, enough on one network).',
    "CHAT_TURN_URLS": "Comma-separated `turn:`/`turns:` URLs of a TURN server sharing CHAT_TURN_SECRET; each client "
    "gets time-limited credentials for them (the TURN REST API scheme, coturn's use-auth-secret).",
    "CHAT_TURN_SECRET": "Shared secret of CHAT_TURN_URLS (unset: no TURN credentials are made).",
    "CHAT_TURN_TTL_S": "Seconds TURN credentials stay valid (default 86400).",
}

# Common media and documents, and application/octet-stream (bytes no magic number names: served only as
# downloads). Executables, archives other than ZIP and office formats are left out; add them here.
DEFAULT_ATTACHMENT_TYPES = (
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "audio/*",
    "video/mp4",
    "video/webm",
    "application/pdf",
    "text/plain",
    "application/zip",
    "application/octet-stream",
)


class ConfigError(RuntimeError):
    """A required setting is missing or malformed."""


def _read(env: Mapping[str, str], key: str, cast: Callable[[str], T], default: T | None = None) -> T:
    raw = env.get(key)
    if raw is None or raw == "":
        if default is None:
            raise ConfigError(f"{key} is not set: {ENV_VARS.get(key, '')}")
        return default
    try:
        return cast(raw)
    except ValueError as exc:
        raise ConfigError(f"{key}={raw!r} is malformed: {exc}") from exc


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _flag(raw: str) -> bool:
    """`1/true/yes/on` or `0/false/no/off`."""
    value = raw.strip().lower()
    if value not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise ValueError("expected 1 or 0")
    return value in ("1", "true", "yes", "on")


def _rate(raw: str) -> tuple[int, float]:
    """`count/seconds`; `0` (no limit) is (0, 1)."""
    if raw.strip() == "0":
        return 0, 1.0
    count, _, seconds = raw.partition("/")
    limit = (int(count), float(seconds or "1"))
    if limit[0] < 0 or limit[1] <= 0:
        raise ValueError("expected count/seconds, both positive")
    return limit


def _ice_servers(raw: str) -> tuple[tuple[tuple[str, ...], str, str], ...]:
    """CHAT_ICE_SERVERS: JSON [{"urls": str | [str], "username"?: str, "credential"?: str}] as
    ((urls...), username, credential) tuples (hashable, like every other setting)."""
    try:
        servers = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(servers, list):
        raise ValueError("expected a JSON list of {urls, username?, credential?}")
    parsed = []
    for server in servers:
        urls = server.get("urls") if isinstance(server, dict) else None
        urls = [urls] if isinstance(urls, str) else urls
        if not urls or not isinstance(urls, list) or not all(isinstance(u, str) and ":" in u for u in urls):
            raise ValueError("each server needs urls: a URL like stun:host:3478, or a list of them")
        username, credential = server.get("username", ""), server.get("credential", "")
        if not isinstance(username, str) or not isinstance(credential, str):
            raise ValueError("username and credential must be strings")
        parsed.append((tuple(urls), username, credential))
    return tuple(parsed)


def _positive(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("expected a whole number of at least 1")
    return value


def _backend(raw: str) -> str:
    if raw not in ("filesystem", "s3"):
        raise ValueError("expected filesystem or s3")
    return raw


def _otel_configured(env: Mapping[str, str]) -> bool:
    """Tracing's default: on when the standard OTEL variables name an exporter or an OTLP endpoint
    (and the SDK is not disabled), so a platform that sets them for every pod gets traces."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def _target(service: str) -> str:
    return f"127.0.0.1:{DEFAULT_PORTS[service]}"


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str
    redis_prefix: str
    jwt_secret: str
    jwt_algorithms: tuple[str, ...]
    jwt_issuer: str | None
    jwt_audience: str | None
    conversation_target: str
    message_target: str
    presence_target: str
    edge_host: str
    edge_port: int
    time_scale: float
    ws_send_queue: int
    ws_send_timeout: float
    log_level: str
    listen_addr: str | None
    max_message_chars: int = 4000
    max_group_size: int = 1000
    metrics_port: int | None = None
    tracing: bool = False
    presence_ttl_s: float = 30.0
    presence_announce_interval_s: float = 2.0
    jwt_jwks_url: str | None = None
    cors_origins: tuple[str, ...] = ()
    ws_allowed_origins: tuple[str, ...] = ()
    rate_rest: tuple[int, float] = (1200, 60.0)
    rate_messages: tuple[int, float] = (600, 60.0)
    ws_max_sockets: int = 20
    ws_max_frames_per_s: int = 50
    ws_max_frame_bytes: int = 65536
    ws_send_queue_bytes: int = 8 << 20
    ws_send_budget_bytes: int = 256 << 20
    ws_min_drain_bytes_per_s: int = 16384
    ws_drain_window_s: float = 5.0
    ws_rate_presence: tuple[int, float] = (10, 10.0)
    ws_rate_typing: tuple[int, float] = (30, 10.0)
    ws_rate_receipts: tuple[int, float] = (300, 10.0)
    ws_rate_acks: tuple[int, float] = (20_000, 10.0)
    ws_presence_interval_s: float = 1.0
    ws_compression: bool = False
    ws_ping_interval_s: float = 20.0
    web_enabled: bool = True
    dev_login: bool = False
    service_key_file: str | None = None
    service_public_keys: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_ca_file: str | None = None
    tls_server_name: str | None = None
    health_port: int | None = None
    attachment_backend: str = "filesystem"
    attachment_dir: str = ".chatmesh/attachments"
    attachment_max_bytes: int = 25 * 1024 * 1024
    attachment_types: tuple[str, ...] = DEFAULT_ATTACHMENT_TYPES
    attachment_max_pixels: int = 50_000_000
    attachment_ttl_s: float = 86_400.0
    attachment_url_ttl_s: float = 300.0
    attachment_url_secret: str = ""
    s3_endpoint_url: str | None = None
    s3_public_endpoint_url: str | None = None
    s3_bucket: str = ""
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    notify_delay_s: float = 5.0
    notify_collapse_s: float = 30.0
    notify_claim_s: float = 60.0
    notify_include_text: bool = False
    push_webhook_secret: str = ""
    call_ring_timeout_s: float = 45.0
    call_max_s: float = 14_400.0
    ice_servers: tuple[tuple[tuple[str, ...], str, str], ...] = ()
    turn_urls: tuple[str, ...] = ()
    turn_secret: str = ""
    turn_ttl_s: float = 86_400.0
    fanout_partitions: int = 8

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        jwks_url = env.get("CHAT_JWT_JWKS_URL") or None
        algorithms = tuple(
            a.strip() for a in _read(env, "CHAT_JWT_ALGORITHMS", str, "RS256" if jwks_url else "HS256").split(",")
        )
        if "none" in (a.lower() for a in algorithms):
            raise ConfigError("CHAT_JWT_ALGORITHMS must not include 'none'")
        tls = {key: env.get(key) or None for key in ("CHAT_TLS_CERT_FILE", "CHAT_TLS_KEY_FILE", "CHAT_TLS_CA_FILE")}
        if any(tls.values()) and not all(tls.values()):  # half a TLS setup would silently run plaintext
            missing = next(key for key, value in tls.items() if not value)
            raise ConfigError(
                f"{missing} is not set: mTLS needs CHAT_TLS_CERT_FILE, CHAT_TLS_KEY_FILE and CHAT_TLS_CA_FILE together"
            )
        return cls(
            database_url=_read(env, "CHAT_DATABASE_URL", str, ""),
            redis_url=_read(env, "CHAT_REDIS_URL", str, ""),
            redis_prefix=_read(env, "CHAT_REDIS_PREFIX", str, "chat"),
            # With a JWKS, user tokens come from the provider and the secret signs nothing.
            jwt_secret=_read(env, "CHAT_JWT_SECRET", str, "" if jwks_url else None),
            jwt_algorithms=algorithms,
            jwt_issuer=env.get("CHAT_JWT_ISSUER") or None,
            jwt_audience=env.get("CHAT_JWT_AUDIENCE") or None,
            conversation_target=_read(env, "CHAT_CONVERSATION_TARGET", str, _target("conversation")),
            message_target=_read(env, "CHAT_MESSAGE_TARGET", str, _target("message")),
            presence_target=_read(env, "CHAT_PRESENCE_TARGET", str, _target("presence")),
            edge_host=_read(env, "CHAT_EDGE_HOST", str, "127.0.0.1"),
            edge_port=_read(env, "CHAT_EDGE_PORT", int, DEFAULT_PORTS["edge"]),
            time_scale=_read(env, "CHAT_TIME_SCALE", float, 1.0),
            presence_ttl_s=_read(env, "CHAT_PRESENCE_TTL_S", float, 30.0),
            presence_announce_interval_s=_read(env, "CHAT_PRESENCE_ANNOUNCE_INTERVAL_S", float, 2.0),
            ws_send_queue=_read(env, "CHAT_WS_SEND_QUEUE", int, 10_000),
            ws_send_timeout=_read(env, "CHAT_WS_SEND_TIMEOUT", float, 10.0),
            log_level=_read(env, "CHAT_LOG_LEVEL", str, "INFO"),
            listen_addr=env.get("CHAT_LISTEN_ADDR") or None,
            max_message_chars=_read(env, "CHAT_MAX_MESSAGE_CHARS", int, 4000),
            max_group_size=_read(env, "CHAT_MAX_GROUP_SIZE", int, 1000),
            metrics_port=_read(env, "CHAT_METRICS_PORT", int, 0) or None,
            tracing=_read(env, "CHAT_TRACING", _flag, _otel_configured(env)),
            jwt_jwks_url=jwks_url,
            cors_origins=_read(env, "CHAT_CORS_ORIGINS", _csv, ()),
            ws_allowed_origins=_read(env, "CHAT_WS_ALLOWED_ORIGINS", _csv, ()),
            rate_rest=_read(env, "CHAT_RATE_REST", _rate, (1200, 60.0)),
            rate_messages=_read(env, "CHAT_RATE_MESSAGES", _rate, (600, 60.0)),
            ws_max_sockets=_read(env, "CHAT_WS_MAX_SOCKETS", int, 20),
            ws_max_frames_per_s=_read(env, "CHAT_WS_MAX_FRAMES_PER_S", int, 50),
            ws_max_frame_bytes=_read(env, "CHAT_WS_MAX_FRAME_BYTES", int, 65536),
            ws_compression=_read(env, "CHAT_WS_COMPRESSION", _flag, False),
            ws_ping_interval_s=_read(env, "CHAT_WS_PING_INTERVAL_S", float, 20.0),
            ws_send_queue_bytes=_read(env, "CHAT_WS_SEND_QUEUE_BYTES", int, 8 << 20),
            ws_send_budget_bytes=_read(env, "CHAT_WS_SEND_BUDGET_BYTES", int, 256 << 20),
            ws_min_drain_bytes_per_s=_read(env, "CHAT_WS_MIN_DRAIN_BYTES_PER_S", int, 16384),
            ws_drain_window_s=_read(env, "CHAT_WS_DRAIN_WINDOW_S", float, 5.0),
            ws_rate_presence=_read(env, "CHAT_WS_RATE_PRESENCE", _rate, (10, 10.0)),
            ws_rate_typing=_read(env, "CHAT_WS_RATE_TYPING", _rate, (30, 10.0)),
            ws_rate_receipts=_read(env, "CHAT_WS_RATE_RECEIPTS", _rate, (300, 10.0)),
            ws_rate_acks=_read(env, "CHAT_WS_RATE_ACKS", _rate, (20_000, 10.0)),
            ws_presence_interval_s=_read(env, "CHAT_WS_PRESENCE_INTERVAL_S", float, 1.0),
            web_enabled=_read(env, "CHAT_WEB_ENABLED", _flag, True),
            dev_login=_read(env, "CHAT_DEV_LOGIN", _flag, False),
            service_key_file=env.get("CHAT_SERVICE_KEY_FILE") or None,
            service_public_keys=env.get("CHAT_SERVICE_PUBLIC_KEYS") or None,
            tls_cert_file=tls["CHAT_TLS_CERT_FILE"],
            tls_key_file=tls["CHAT_TLS_KEY_FILE"],
            tls_ca_file=tls["CHAT_TLS_CA_FILE"],
            tls_server_name=env.get("CHAT_TLS_SERVER_NAME") or None,
            health_port=_read(env, "CHAT_HEALTH_PORT", int, 0) or None,
            attachment_backend=_read(env, "CHAT_ATTACHMENT_BACKEND", _backend, "filesystem"),
            attachment_dir=_read(
                env, "CHAT_ATTACHMENT_DIR", str, os.path.join(env.get("CHAT_DATA_DIR") or ".chatmesh", "attachments")
            ),
            attachment_max_bytes=_read(env, "CHAT_ATTACHMENT_MAX_BYTES", int, 25 * 1024 * 1024),
            attachment_types=_read(env, "CHAT_ATTACHMENT_TYPES", _csv, DEFAULT_ATTACHMENT_TYPES),
            attachment_max_pixels=_read(env, "CHAT_ATTACHMENT_MAX_PIXELS", int, 50_000_000),
            attachment_ttl_s=_read(env, "CHAT_ATTACHMENT_TTL_S", float, 86_400.0),
            attachment_url_ttl_s=_read(env, "CHAT_ATTACHMENT_URL_TTL_S", float, 300.0),
            attachment_url_secret=env.get("CHAT_ATTACHMENT_URL_SECRET") or "",
            s3_endpoint_url=env.get("CHAT_S3_ENDPOINT_URL") or None,
            s3_public_endpoint_url=env.get("CHAT_S3_PUBLIC_ENDPOINT_URL") or None,
            s3_bucket=env.get("CHAT_S3_BUCKET") or "",
            s3_region=_read(env, "CHAT_S3_REGION", str, "us-east-1"),
            s3_access_key_id=env.get("CHAT_S3_ACCESS_KEY_ID") or None,
            s3_secret_access_key=env.get("CHAT_S3_SECRET_ACCESS_KEY") or None,
            notify_delay_s=_read(env, "CHAT_NOTIFY_DELAY_S", float, 5.0),
            notify_collapse_s=_read(env, "CHAT_NOTIFY_COLLAPSE_S", float, 30.0),
            notify_claim_s=_read(env, "CHAT_NOTIFY_CLAIM_S", float, 60.0),
            notify_include_text=_read(env, "CHAT_NOTIFY_INCLUDE_TEXT", _flag, False),
            push_webhook_secret=env.get("CHAT_PUSH_WEBHOOK_SECRET") or "",
            call_ring_timeout_s=_read(env, "CHAT_CALL_RING_TIMEOUT_S", float, 45.0),
            call_max_s=_read(env, "CHAT_CALL_MAX_S", float, 14_400.0),
            ice_servers=_read(env, "CHAT_ICE_SERVERS", _ice_servers, ()),
            turn_urls=_read(env, "CHAT_TURN_URLS", _csv, ()),
            turn_secret=env.get("CHAT_TURN_SECRET") or "",
            turn_ttl_s=_read(env, "CHAT_TURN_TTL_S", float, 86_400.0),
            fanout_partitions=_read(env, "CHAT_FANOUT_PARTITIONS", _positive, 8),
        )

    def require(self, *names: str) -> None:
        """Fail at start when a service needs a setting that has no default (a database, a Redis)."""
        for name in names:
            if not getattr(self, name):
                key = f"CHAT_{name.upper()}"
                raise ConfigError(f"{key} is not set: {ENV_VARS.get(key, '')}")

    def listen(self, service: str) -> str:
        return self.listen_addr or f"127.0.0.1:{DEFAULT_PORTS[service]}"
