"""Users' devices: where a push notification may reach them.

A device is a platform and its push token. Registering is idempotent (the same token again is the
same device), and a token is one app install: registered by another user, it moves to them, so a
shared phone that changed accounts stops getting the first account's notifications.
"""

from __future__ import annotations

import unicodedata
import uuid

from psycopg_pool import AsyncConnectionPool

from chatmesh import errors
from chatmesh.gen.chat.v1 import notification_pb2 as pb
from chatmesh.timestamps import timestamp
from services.message import notify_store
from services.message.access import parse_id
from services.message.notify_store import DeviceRow

PLATFORMS: dict[int, str] = {
    pb.DEVICE_PLATFORM_APNS: "apns",
    pb.DEVICE_PLATFORM_FCM: "fcm",
    pb.DEVICE_PLATFORM_WEB_PUSH: "web_push",
}
_PLATFORM_VALUES = {name: value for value, name in PLATFORMS.items()}
MAX_TOKEN_CHARS = 4096  # a Web Push subscription (endpoint and keys as JSON) is well under 1 KiB
MAX_DEVICES = 20


def validate_token(token: str) -> str:
    if not token.strip():
        raise errors.invalid("INVALID_PUSH_TOKEN", "push_token is required")
    if len(token) > MAX_TOKEN_CHARS:
        raise errors.invalid("INVALID_PUSH_TOKEN", f"push_token is longer than {MAX_TOKEN_CHARS} characters")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in token):
        raise errors.invalid("INVALID_PUSH_TOKEN", "push_token must not contain control characters")
    return token


def platform_name(platform: int) -> str:
    name = PLATFORMS.get(platform)
    if name is None:
        raise errors.invalid(
            "INVALID_PLATFORM", "platform must be DEVICE_PLATFORM_APNS, DEVICE_PLATFORM_FCM or DEVICE_PLATFORM_WEB_PUSH"
        )
    return name


def to_proto(row: DeviceRow) -> pb.Device:
    return pb.Device(
        device_id=row.device_id,
        platform=_PLATFORM_VALUES[row.platform],  # type: ignore[arg-type]
        push_token=row.push_token,
        created_at=timestamp(row.created_at),
    )


class Devices:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def register(self, user_id: str, platform: int, push_token: str) -> tuple[pb.Device, bool]:
        """(device, created). Checked before any transaction; the user's registrations are serialized
        so the device limit holds under concurrent calls."""
        name = platform_name(platform)
        token = validate_token(push_token)
        async with self._pool.connection() as conn, conn.transaction():
            await notify_store.lock_user_devices(conn, user_id)
            existing = await notify_store.find_device(conn, name, token)
            if existing is not None and existing.user_id == user_id:
                return to_proto(existing), False
            if await notify_store.count_devices(conn, user_id) >= MAX_DEVICES:
                raise errors.failed_precondition(
                    "TOO_MANY_DEVICES", f"a user may register at most {MAX_DEVICES} devices; delete one first"
                )
            row = await notify_store.put_device(conn, str(uuid.uuid4()), user_id, name, token)
            return to_proto(row), True

    async def list(self, user_id: str) -> list[pb.Device]:
        async with self._pool.connection() as conn:
            return [to_proto(row) for row in await notify_store.list_devices(conn, user_id)]

    async def delete(self, user_id: str, device_id: str) -> None:
        """The caller's own device only: another user's id reads as unknown (404)."""
        device_id = parse_id(device_id, "device_id")
        async with self._pool.connection() as conn:
            if not await notify_store.delete_device(conn, user_id, device_id):
                raise errors.not_found("DEVICE_NOT_FOUND", f"you have no device {device_id}")
