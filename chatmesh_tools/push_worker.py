"""The reference push worker: `chatmesh push-worker --webhook URL`.

It consumes `StreamNotifications` (consumer group `--group`, as the service `push`) and POSTs each
notification to the webhook as JSON (proto3 JSON, as the REST API renders, devices included), so the
host application turns it into APNs, FCM or Web Push sends. Each POST is signed:

    X-Chatmesh-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(CHAT_PUSH_WEBHOOK_SECRET, "<t>." + body)>

(`verify_signature` below is what a receiver does; the timestamp bounds replays). A 2xx answer
acknowledges the notification. A timeout, a connection error, 408, 429 or a 5xx is retried after
2 s, 4 s and 8 s (scaled by CHAT_TIME_SCALE), then the notification is dead-lettered (`chatmesh
dead-letter list --notifications`, `replay --notifications`); any other answer (a 4xx: the receiver
refuses it for good) is dead-lettered at once.

It never holds up the mesh: at most `--concurrency` POSTs run at once and the stream asks for no more
unacknowledged notifications than that (the message service holds the rest in Redis), every POST has
a timeout, and a webhook that hangs costs only this worker's slots. Killed at any point, it loses
nothing: what it received and did not acknowledge is streamed again to the next worker under the
same `--consumer` name at once, or to any worker of the group after CHAT_NOTIFY_CLAIM_S. So delivery
is at least once: a receiver dedupes by `notification_id`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
import httpx
from google.protobuf import json_format

from chatmesh.auth import ServiceCredentials
from chatmesh.config import ConfigError, Settings
from chatmesh.gen.chat.v1 import notification_pb2 as pb
from chatmesh.gen.chat.v1 import notification_pb2_grpc
from chatmesh.grpc_client import open_channel
from chatmesh.resilience import Backoff, OutageLog
from chatmesh.tls import client_tls

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Chatmesh-Signature"
RETRY_DELAYS_S = (2.0, 4.0, 8.0)
RETRY_STATUSES = frozenset({408, 429})
CALL_TIMEOUT_S = 5.0
SIGNATURE_TOLERANCE_S = 300


def sign(secret: bytes, body: bytes, now: int | None = None) -> str:
    stamp = int(time.time()) if now is None else now
    digest = hmac.new(secret, f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"


def verify_signature(secret: bytes, header: str, body: bytes, tolerance_s: int = SIGNATURE_TOLERANCE_S) -> bool:
    """What a receiver checks: the signature over the timestamp and the exact body, and a recent timestamp."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        stamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    expected = hmac.new(secret, f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return abs(time.time() - stamp) <= tolerance_s and hmac.compare_digest(expected, parts.get("v1", ""))


@dataclass(frozen=True)
class WorkerOptions:
    webhook: str
    secret: bytes
    group: str = "push"
    consumer: str = ""
    concurrency: int = 16
    timeout_s: float = 5.0
    retry_delays_s: tuple[float, ...] = RETRY_DELAYS_S

    @classmethod
    def of(
        cls, settings: Settings, webhook: str, *, group: str, consumer: str | None, concurrency: int, timeout_s: float
    ) -> WorkerOptions:
        if not settings.push_webhook_secret:
            raise ConfigError("CHAT_PUSH_WEBHOOK_SECRET is not set: the key the worker signs each POST with")
        if not webhook.startswith(("http://", "https://")):
            raise ConfigError(f"--webhook {webhook!r} is not an http(s) URL")
        if concurrency < 1 or timeout_s <= 0:
            raise ConfigError("--concurrency and --timeout must be positive")
        return cls(
            webhook,
            settings.push_webhook_secret.encode(),
            group,
            consumer or f"{socket.gethostname()}-{os.getpid()}",
            concurrency,
            timeout_s,
            tuple(d * settings.time_scale for d in RETRY_DELAYS_S),
        )


class PushWorker:
    def __init__(
        self,
        stub: notification_pb2_grpc.NotificationServiceStub,
        credentials: ServiceCredentials,
        options: WorkerOptions,
        http: httpx.AsyncClient,
    ) -> None:
        self._stub = stub
        self._credentials = credentials
        self._options = options
        self._http = http
        self._slots = asyncio.Semaphore(options.concurrency)
        self._active: dict[str, asyncio.Task[None]] = {}

    async def run(self, stopping: asyncio.Event) -> None:
        """Stream, deliver, reconnect with backoff; on `stopping`, let in-flight POSTs finish (bounded)."""
        reader = asyncio.create_task(self._read_forever())
        await stopping.wait()
        reader.cancel()
        if self._active:
            await asyncio.wait(list(self._active.values()), timeout=self._options.timeout_s * 2)

    async def _read_forever(self) -> None:
        outage = OutageLog(log, "push worker: notification stream")
        backoff = Backoff(0.1, 5.0)
        request = pb.StreamNotificationsRequest(
            group=self._options.group, consumer=self._options.consumer, max_in_flight=self._options.concurrency
        )
        while True:
            try:
                async for response in self._stub.StreamNotifications(
                    request, metadata=self._credentials.metadata(), wait_for_ready=True
                ):
                    outage.recovered()
                    backoff.reset()
                    for note in response.notifications:
                        if note.notification_id in self._active:
                            continue  # streamed again while its POST still runs (a reconnect): one is enough
                        await self._slots.acquire()
                        task = asyncio.create_task(self._deliver(note))
                        self._active[note.notification_id] = task
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (
                    grpc.StatusCode.PERMISSION_DENIED,
                    grpc.StatusCode.UNAUTHENTICATED,
                    grpc.StatusCode.INVALID_ARGUMENT,
                ):
                    log.error("push worker refused by the mesh: %s %s", exc.code().name, exc.details())
                outage.failed(exc)
            await backoff.sleep()

    async def _deliver(self, note: pb.Notification) -> None:
        group, ids = self._options.group, [note.notification_id]
        try:
            failure = await self._post(note)
            if failure is None:
                await self._settle(
                    lambda: self._stub.AckNotifications(
                        pb.AckNotificationsRequest(group=group, notification_ids=ids),
                        metadata=self._credentials.metadata(),
                        timeout=CALL_TIMEOUT_S,
                        wait_for_ready=True,
                    )
                )
            else:
                log.warning("notification %s dead-lettered: %s", note.notification_id, failure)
                await self._settle(
                    lambda: self._stub.DeadLetterNotifications(
                        pb.DeadLetterNotificationsRequest(group=group, notification_ids=ids, reason=failure),
                        metadata=self._credentials.metadata(),
                        timeout=CALL_TIMEOUT_S,
                        wait_for_ready=True,
                    )
                )
        finally:
            self._active.pop(note.notification_id, None)
            self._slots.release()

    async def _post(self, note: pb.Notification) -> str | None:
        """None once the webhook took it; otherwise why it was given up on."""
        body = json.dumps(
            json_format.MessageToDict(note, preserving_proto_field_name=True), separators=(",", ":")
        ).encode()
        reason = ""
        for attempt in range(len(self._options.retry_delays_s) + 1):
            if attempt:
                await asyncio.sleep(self._options.retry_delays_s[attempt - 1])
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: sign(self._options.secret, body),
                "X-Chatmesh-Notification-Id": note.notification_id,
                "X-Chatmesh-Attempt": str(attempt + 1),
            }
            try:
                reply = await self._http.post(
                    self._options.webhook, content=body, headers=headers, timeout=self._options.timeout_s
                )
            except httpx.TimeoutException:
                reason = f"timed out after {self._options.timeout_s:g} s"
                continue
            except httpx.TransportError as exc:
                reason = f"{type(exc).__name__}: {exc}"
                continue
            if reply.is_success:
                return None
            reason = f"HTTP {reply.status_code}"
            if reply.status_code < 500 and reply.status_code not in RETRY_STATUSES:
                return f"{reason} (not retried)"
        return f"{reason} after {len(self._options.retry_delays_s)} retries"

    async def _settle(self, call: Callable[[], Awaitable[object]]) -> None:
        """Acknowledge (or dead-letter), retried a few times; if it never lands, the notification is
        streamed again later: at least once, never lost."""
        backoff = Backoff(0.1, 2.0)
        for attempt in range(5):
            try:
                await call()
                return
            except grpc.aio.AioRpcError as exc:
                if attempt == 4:
                    log.warning("could not settle a notification (%s); it will be streamed again", exc.code().name)
                    return
                await backoff.sleep()


async def main(settings: Settings, options: WorkerOptions, stopping: asyncio.Event) -> None:
    channel = open_channel(settings.message_target, client_tls(settings))
    limits = httpx.Limits(max_connections=options.concurrency, max_keepalive_connections=options.concurrency)
    async with httpx.AsyncClient(limits=limits) as http:
        worker = PushWorker(
            notification_pb2_grpc.NotificationServiceStub(channel), ServiceCredentials(settings, "push"), options, http
        )
        log.info(
            "push worker %s of group %s: %s -> %s",
            options.consumer,
            options.group,
            settings.message_target,
            options.webhook,
        )
        try:
            await worker.run(stopping)
        finally:
            await channel.close()
