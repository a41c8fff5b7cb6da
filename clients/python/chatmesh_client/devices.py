"""Devices from Python: `await client.devices.register("fcm", token)`, `await client.devices.list()`,
`await client.devices.delete(device_id)`: where the mesh's push notifications may reach the user
while none of their connections acknowledges a message (the host application's push worker sends)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from chatmesh_client.rest import Rest

PATH = "/api/users/me/devices"


@dataclass
class Device:
    device_id: str
    platform: str  # apns | fcm | web_push
    push_token: str
    created_at: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Device:
        platform = str(data.get("platform", "")).removeprefix("DEVICE_PLATFORM_").lower()
        return cls(
            str(data.get("device_id", "")), platform, str(data.get("push_token", "")), str(data.get("created_at", ""))
        )


class Devices:
    def __init__(self, rest: Rest) -> None:
        self._rest = rest

    async def register(self, platform: str, push_token: str) -> Device:
        """Idempotent: the same platform and token again is the same device."""
        reply = await self._rest.call("POST", PATH, json={"platform": platform, "push_token": push_token})
        return Device.from_json(reply["device"])

    async def list(self) -> list[Device]:
        return [Device.from_json(d) for d in (await self._rest.call("GET", PATH)).get("devices") or []]

    async def delete(self, device_id: str) -> None:
        await self._rest.call("DELETE", f"{PATH}/{quote(device_id, safe='')}")
