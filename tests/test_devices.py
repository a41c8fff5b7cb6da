"""Devices (issue 19, item 1): users register where a push may reach them, over REST and gRPC; bad
registrations are refused with a code and leave nothing behind."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import httpx
import pytest

from chatmesh.errors import error_code_of
from chatmesh.gen.chat.v1 import notification_pb2 as pb
from chatmesh.gen.chat.v1 import notification_pb2_grpc
from chatmesh_tools.launcher import Mesh
from tests.helpers import bearer
from tests.test_message_support import api, code_of, new_user_id

DEVICES = "/api/users/me/devices"


async def test_register_list_and_delete_over_rest(http: httpx.AsyncClient, make_token: Callable[..., str]) -> None:
    alice = make_token(new_user_id("alice"))
    first = await api(http, alice, "POST", DEVICES, {"platform": "apns", "push_token": "a1b2c3"})
    assert first.status_code == 200, first.text
    device = first.json()["device"]
    assert (device["platform"], device["push_token"], first.json()["created"]) == (
        "DEVICE_PLATFORM_APNS",
        "a1b2c3",
        True,
    )
    again = await api(http, alice, "POST", DEVICES, {"platform": "DEVICE_PLATFORM_APNS", "push_token": "a1b2c3"})
    assert (again.json()["device"]["device_id"], again.json()["created"]) == (device["device_id"], False)
    web = await api(http, alice, "POST", DEVICES, {"platform": "web_push", "push_token": '{"endpoint": "https://x"}'})
    assert web.status_code == 200, web.text

    listed = (await api(http, alice, "GET", DEVICES)).json()["devices"]
    assert [d["device_id"] for d in listed] == [device["device_id"], web.json()["device"]["device_id"]]
    assert (await api(http, alice, "DELETE", f"{DEVICES}/{device['device_id']}")).status_code == 200
    assert code_of(await api(http, alice, "DELETE", f"{DEVICES}/{device['device_id']}")) == (404, "DEVICE_NOT_FOUND")
    assert [d["platform"] for d in (await api(http, alice, "GET", DEVICES)).json()["devices"]] == [
        "DEVICE_PLATFORM_WEB_PUSH"
    ]


async def test_a_token_moves_to_the_user_who_registers_it_last(
    http: httpx.AsyncClient, make_token: Callable[..., str]
) -> None:
    """A push token is one app install: signed into another account, it must stop reaching the first."""
    alice, bob = make_token(new_user_id("alice")), make_token(new_user_id("bob"))
    token = f"fcm-{new_user_id('t')}"
    mine = (await api(http, alice, "POST", DEVICES, {"platform": "fcm", "push_token": token})).json()["device"]
    theirs = await api(http, bob, "POST", DEVICES, {"platform": "fcm", "push_token": token})
    assert theirs.json()["created"] is True and theirs.json()["device"]["device_id"] != mine["device_id"]
    assert (await api(http, alice, "GET", DEVICES)).json()["devices"] == []
    # alice's old id no longer names anything of hers, so she cannot remove bob's device
    assert code_of(await api(http, alice, "DELETE", f"{DEVICES}/{mine['device_id']}")) == (404, "DEVICE_NOT_FOUND")
    assert len((await api(http, bob, "GET", DEVICES)).json()["devices"]) == 1


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"platform": "carrier_pigeon", "push_token": "x"}, (400, "INVALID_ARGUMENT")),  # not a platform at all
        ({"platform": "DEVICE_PLATFORM_UNSPECIFIED", "push_token": "x"}, (400, "INVALID_PLATFORM")),
        ({"push_token": "x"}, (400, "INVALID_PLATFORM")),
        ({"platform": "apns", "push_token": ""}, (400, "INVALID_PUSH_TOKEN")),
        ({"platform": "apns", "push_token": "   "}, (400, "INVALID_PUSH_TOKEN")),
        ({"platform": "apns", "push_token": "x" * 4097}, (400, "INVALID_PUSH_TOKEN")),
        ({"platform": "apns", "push_token": "ab\ncd"}, (400, "INVALID_PUSH_TOKEN")),
        ({"platform": "apns", "push_token": 5}, (400, "INVALID_ARGUMENT")),
    ],
)
async def test_bad_registrations_are_refused_and_leave_nothing(
    http: httpx.AsyncClient, make_token: Callable[..., str], body: dict[str, object], expected: tuple[int, str]
) -> None:
    user = make_token(new_user_id("alice"))
    assert code_of(await api(http, user, "POST", DEVICES, body)) == expected
    assert (await api(http, user, "GET", DEVICES)).json()["devices"] == []


async def test_a_user_has_at_most_twenty_devices(http: httpx.AsyncClient, make_token: Callable[..., str]) -> None:
    user = make_token(new_user_id("alice"))
    for n in range(20):
        assert (await api(http, user, "POST", DEVICES, {"platform": "fcm", "push_token": f"t{n}"})).status_code == 200
    assert code_of(await api(http, user, "POST", DEVICES, {"platform": "fcm", "push_token": "t20"})) == (
        400,
        "TOO_MANY_DEVICES",
    )
    assert len((await api(http, user, "GET", DEVICES)).json()["devices"]) == 20
    assert (await api(http, user, "POST", DEVICES, {"platform": "fcm", "push_token": "t3"})).status_code == 200


async def test_devices_over_grpc_and_the_internal_rpcs_refuse_users(
    mesh: Mesh, make_token: Callable[..., str], http: httpx.AsyncClient
) -> None:
    user_id = new_user_id("alice")
    metadata = (("authorization", f"Bearer {make_token(user_id)}"),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.ports['message']}") as channel:
        stub = notification_pb2_grpc.NotificationServiceStub(channel)
        reply = await stub.RegisterDevice(
            pb.RegisterDeviceRequest(platform=pb.DEVICE_PLATFORM_FCM, push_token="g1"), metadata=metadata, timeout=5
        )
        listed = await stub.ListDevices(pb.ListDevicesRequest(), metadata=metadata, timeout=5)
        assert [d.device_id for d in listed.devices] == [reply.device.device_id]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.DeleteDevice(pb.DeleteDeviceRequest(device_id="nope"), metadata=metadata, timeout=5)
        assert (refused.value.code(), error_code_of(refused.value)) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ID")
        with pytest.raises(grpc.aio.AioRpcError) as internal:
            await stub.AckNotifications(
                pb.AckNotificationsRequest(notification_ids=["1-1"]), metadata=metadata, timeout=5
            )
        assert error_code_of(internal.value) == "INTERNAL_ONLY"
    # the same device over REST
    rest = (await http.get(DEVICES, headers=bearer(make_token(user_id)))).json()["devices"]
    assert [d["push_token"] for d in rest] == ["g1"]
