"""The Python client's devices (issue 19, item 1): register, list and delete where push notifications go."""

from __future__ import annotations

import pytest

from chatmesh_client import ChatError, Client
from chatmesh_tools.launcher import Mesh
from tests.helpers import new_user_id


async def test_the_client_registers_lists_and_deletes_devices(mesh: Mesh, make_token) -> None:  # type: ignore[no-untyped-def]
    client = Client(mesh.edge_url)
    await client.connect(make_token(new_user_id("alice")))
    try:
        phone = await client.devices.register("apns", "0a1b2c")
        assert (phone.platform, phone.push_token) == ("apns", "0a1b2c")
        assert (await client.devices.register("apns", "0a1b2c")).device_id == phone.device_id
        browser = await client.devices.register("web_push", '{"endpoint": "https://push.example/1"}')
        assert [d.device_id for d in await client.devices.list()] == [phone.device_id, browser.device_id]
        await client.devices.delete(phone.device_id)
        assert [d.platform for d in await client.devices.list()] == ["web_push"]
        with pytest.raises(ChatError) as refused:
            await client.devices.register("fcm", "")
        assert (refused.value.code, refused.value.status) == ("INVALID_PUSH_TOKEN", 400)
    finally:
        await client.close()
