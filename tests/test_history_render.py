"""The JSON of history pages and every other REST reply: byte for byte what the edge rendered with
json_format.MessageToDict and Starlette's JSONResponse before its renderer was compiled per type.

The first tests need no servers: random messages of every response type, and a fixed page built by
the message service's own convert.message (a message with reactions and a "read by" list, a reply,
an encrypted message, a deleted placeholder). The last one reads a page through the mesh.
"""

from __future__ import annotations

import base64
import json
import random
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from google.protobuf import descriptor, descriptor_pb2, json_format, struct_pb2
from google.protobuf.message import Message
from starlette.responses import JSONResponse

from chatmesh.gen.chat.v1 import common_pb2, conversation_pb2, message_pb2, presence_pb2
from services.edge.proto_json import JsonRenderer
from services.edge.transcoder import Transcoder, routes_from
from services.message import convert
from services.message.store import MessageRow
from tests.helpers import send
from tests.test_message_support import api, group, mark, new_user_id

ROUTES = routes_from([conversation_pb2, message_pb2, presence_pb2])
F = descriptor.FieldDescriptor
# Characters JSON encoders disagree on: quotes, backslashes, control characters, DEL, the JavaScript line
# separators, non-BMP emoji, a ZWJ sequence.
TRICKY = ['"', "\\", "\n", "\t", "\x00", "\x1f", "\x7f", "\u2028", "\u2029", "é", "€", "👍", "👨‍👩‍👧", "</script>", " "]


def _before(message: Message) -> bytes:
    """What the edge wrote before: MessageToDict, then JSONResponse."""
    return bytes(
        JSONResponse(
            json_format.MessageToDict(
                message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )
        ).body
    )


def _text(rng: random.Random) -> str:
    return "".join(
        rng.choice(TRICKY) if rng.random() < 0.3 else chr(rng.randrange(32, 127)) for _ in range(rng.randrange(0, 12))
    )


def _scalar(field: descriptor.FieldDescriptor, rng: random.Random) -> Any:
    if field.type == F.TYPE_STRING:
        return _text(rng)
    if field.type == F.TYPE_BYTES:
        return rng.randbytes(rng.randrange(0, 40))
    if field.type == F.TYPE_BOOL:
        return rng.random() < 0.5
    if field.enum_type is not None:  # open enums: a number the enum does not name renders as the number
        return rng.choice([v.number for v in field.enum_type.values] + [99])
    if field.cpp_type == F.CPPTYPE_INT64:
        return rng.choice([0, 1, -1, 2**63 - 1, -(2**63), rng.randrange(-(2**40), 2**40)])
    if field.cpp_type == F.CPPTYPE_INT32:
        return rng.choice([0, 1, -1, 2**31 - 1, -(2**31), rng.randrange(-1000, 1000)])
    raise AssertionError(f"no generator for {field.full_name}")


def _fill(message: Message, rng: random.Random, depth: int = 0) -> Message:
    """Set a random half of the fields (oneofs: one member), to random values, nested messages too."""
    if message.DESCRIPTOR.full_name == "google.protobuf.Timestamp":
        message.seconds = rng.choice([0, -62135596800, 253402300799, rng.randrange(0, 4 * 10**9)])
        message.nanos = rng.choice([0, 5_000_000, 123_000, 7, 999_999_999])
        return message
    for field in message.DESCRIPTOR.fields:
        if rng.random() < 0.5 or (field.containing_oneof and message.WhichOneof(field.containing_oneof.name)):
            continue
        count = rng.randrange(0, 4) if field.is_repeated else 1
        if field.message_type is not None and field.message_type.GetOptions().map_entry:  # map<string, string>
            for _ in range(count):
                getattr(message, field.name)[_scalar(field.message_type.fields_by_name["key"], rng)] = _scalar(
                    field.message_type.fields_by_name["value"], rng
                )
            continue
        for _ in range(count):
            if field.message_type is not None:
                if depth > 3:
                    continue
                target = getattr(message, field.name)
                target = target.add() if field.is_repeated else target
                _fill(target, rng, depth + 1)
                if not field.is_repeated:
                    target.SetInParent()
            elif field.is_repeated:
                getattr(message, field.name).append(_scalar(field, rng))
            else:
                setattr(message, field.name, _scalar(field, rng))
    return message


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.method.name + ("" if r.is_primary else "+"))
def test_every_reply_renders_as_before(route: Any) -> None:
    rng = random.Random(route.method.full_name)
    for _ in range(60):
        reply = _fill(route.response_class(), rng)
        assert Transcoder.render_json(reply) == _before(reply), reply  # the same bytes: keys in the same order


def test_events_render_as_before_without_defaults() -> None:
    """The WebSocket's form (no always_print_fields_with_no_presence), for the event payloads."""
    rng, renderer = random.Random(7), JsonRenderer(always_print_fields_with_no_presence=False)
    for _ in range(200):
        event = _fill(common_pb2.Event(), rng)
        assert json.dumps(renderer.render(event)) == json.dumps(
            json_format.MessageToDict(event, preserving_proto_field_name=True)
        )


def test_types_it_does_not_compile_go_through_json_format() -> None:
    """Maps, floats, closed enums, proto2 presence and other well-known types: MessageToDict itself."""
    renderer = JsonRenderer()
    value = struct_pb2.Struct()
    value.update({"a": 1.5, "b": [True, None, "x"], "c": {"d": 1e300}})
    file = descriptor_pb2.FileDescriptorProto(
        name="x.proto", options=descriptor_pb2.FileOptions(optimize_for=descriptor_pb2.FileOptions.CODE_SIZE)
    )
    file.message_type.add(name="M").field.add(
        name="f", number=1, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL, default_value="2.5"
    )
    for message in (value, file, struct_pb2.Value(number_value=0.1)):
        assert renderer.render(message) == json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )


T0 = datetime(2026, 11, 25, 21, 0, 0, 120000, tzinfo=UTC)
T1 = datetime(2026, 11, 25, 21, 0, 5, tzinfo=UTC)
T2 = datetime(2026, 11, 25, 21, 1, 0, 123456, tzinfo=UTC)
CID = "0b6b5a3e-1d2c-4b7f-8e9a-000000000001"


def _row(seq: int, **kw: Any) -> MessageRow:
    fields: dict[str, Any] = dict(
        message_id=f"00000000-0000-0000-0000-{seq:012d}",
        conversation_id=CID,
        seq=seq,
        sender_id="alice",
        content=f"m{seq}",
        content_encrypted=None,
        enc_algorithm="",
        enc_key_id="",
        client_message_id=None,
        reply_to_id=None,
        created_at=T0,
        edited_at=None,
        deleted_at=None,
    )
    return MessageRow(**(fields | kw))


def test_a_fixed_page_renders_exactly() -> None:
    """A page as the message service builds it and the edge writes it, pinned to the byte."""
    read_by = convert.recipients(
        [("bob", common_pb2.MESSAGE_STATUS_READ), ("carol", common_pb2.MESSAGE_STATUS_DELIVERED)]
    )
    page = message_pb2.ListMessagesResponse(
        has_more=True,
        messages=[
            convert.message(
                _row(1, client_message_id="c-1", edited_at=T1, reply_count=2, last_reply_at=T2),
                common_pb2.MESSAGE_STATUS_DELIVERED,
                [("👍", ["bob", "carol"]), ("❤️", ["bob"])],
                read_by,
            ),
            convert.message(
                _row(2, sender_id="bob", reply_to_id="00000000-0000-0000-0000-000000000001", content='say "hi"\n'),
                common_pb2.MESSAGE_STATUS_READ,
            ),
            convert.message(
                _row(
                    3,
                    content="",
                    content_encrypted=b"\x00\xffciphertext",
                    enc_algorithm="x25519",
                    enc_key_id="k-7",
                    created_at=T2,
                ),
                common_pb2.MESSAGE_STATUS_SENT,
            ),
            convert.message(
                _row(4, deleted_at=T2, edited_at=T1, reply_to_id="x", reply_count=1, last_reply_at=T1),
                common_pb2.MESSAGE_STATUS_SENT,
                [("👍", ["bob"])],
                read_by,
            ),
        ],
    )
    ids = [f"00000000-0000-0000-0000-{seq:012d}" for seq in range(1, 5)]
    expected = (
        '{"messages":['
        f'{{"message_id":"{ids[0]}","conversation_id":"{CID}","seq":"1","sender_id":"alice","content":"m1",'
        '"client_message_id":"c-1","created_at":"2026-11-25T21:00:00.120Z",'
        '"edited_at":"2026-11-25T21:00:05Z",'
        '"status":"MESSAGE_STATUS_DELIVERED","reactions":[{"emoji":"👍","count":2,"user_ids":["bob","carol"]},'
        '{"emoji":"❤️","count":1,"user_ids":["bob"]}],'
        '"recipients":[{"user_id":"bob","status":"MESSAGE_STATUS_READ"},'
        '{"user_id":"carol","status":"MESSAGE_STATUS_DELIVERED"}],"reply_count":2,'
        '"last_reply_at":"2026-11-25T21:01:00.123456Z","content_encrypted":"","reply_to_id":"",'
        '"deleted":false,"attachments":[]},'
        f'{{"message_id":"{ids[1]}","conversation_id":"{CID}","seq":"2","sender_id":"bob",'
        f'"content":"say \\"hi\\"\\n","reply_to_id":"{ids[0]}","created_at":"2026-11-25T21:00:00.120Z",'
        '"status":"MESSAGE_STATUS_READ","content_encrypted":"","client_message_id":"","deleted":false,'
        '"reactions":[],"recipients":[],"attachments":[],"reply_count":0},'
        f'{{"message_id":"{ids[2]}","conversation_id":"{CID}","seq":"3","sender_id":"alice",'
        '"content_encrypted":"AP9jaXBoZXJ0ZXh0","encryption":{"algorithm":"x25519","key_id":"k-7"},'
        '"created_at":"2026-11-25T21:01:00.123456Z","status":"MESSAGE_STATUS_SENT","content":"",'
        '"client_message_id":"","reply_to_id":"","deleted":false,"reactions":[],"recipients":[],"attachments":[],'
        '"reply_count":0},'
        f'{{"message_id":"{ids[3]}","conversation_id":"{CID}","seq":"4","sender_id":"alice",'
        '"created_at":"2026-11-25T21:00:00.120Z","deleted":true,"deleted_at":"2026-11-25T21:01:00.123456Z",'
        '"status":"MESSAGE_STATUS_SENT","reply_count":1,"last_reply_at":"2026-11-25T21:00:05Z","content":"",'
        '"content_encrypted":"","client_message_id":"","reply_to_id":"","reactions":[],"recipients":[],'
        '"attachments":[]}'
        '],"has_more":true}'
    )
    assert Transcoder.render_json(page).decode() == expected
    assert _before(page) == expected.encode()


async def test_a_history_page_through_the_mesh(http: httpx.AsyncClient, make_token, database_url: str) -> None:
    """The sender's page (statuses and the "read by" list) and two readers', with reactions, a reply,
    an encrypted message and a deleted placeholder: the exact JSON, and the bytes the old renderer made."""
    alice, bob, carol = new_user_id("alice"), new_user_id("bob"), new_user_id("carol")
    cid = await group(database_url, {alice: "admin", bob: "member", carol: "member"})
    token = make_token(alice)
    first = await send(http, token, cid, "hello", client_message_id="c-1")
    secret = base64.b64encode(b"\x00\xffciphertext").decode()
    sealed = await send(
        http, token, cid, "", content_encrypted=secret, encryption={"algorithm": "x25519-aes256gcm", "key_id": "k-7"}
    )
    reply = await send(http, make_token(bob), cid, "hi back", reply_to_id=first["message_id"])
    doomed = await send(http, token, cid, "oops")
    for user, emoji in ((bob, "👍"), (carol, "👍"), (bob, "❤️")):
        assert (
            await api(
                http, make_token(user), "POST", f"/api/messages/{first['message_id']}/reactions", {"emoji": emoji}
            )
        ).status_code == 200
    deleted = (await api(http, token, "DELETE", f"/api/messages/{doomed['message_id']}")).json()["message"]
    assert (await mark(http, make_token(bob), sealed["message_id"], "read")).status_code == 200
    assert (await mark(http, make_token(carol), first["message_id"], "delivered")).status_code == 200

    def common(sent: dict[str, Any]) -> dict[str, Any]:
        return {k: sent[k] for k in ("message_id", "conversation_id", "seq", "sender_id", "created_at")} | {
            "content": "",
            "content_encrypted": "",
            "client_message_id": "",
            "reply_to_id": "",
            "deleted": False,
            "reactions": [],
            "recipients": [],
            "attachments": [],
            "reply_count": 0,
        }

    def statuses(bob_status: str, carol_status: str) -> list[dict[str, str]]:
        return [
            {"user_id": bob, "status": f"MESSAGE_STATUS_{bob_status}"},
            {"user_id": carol, "status": f"MESSAGE_STATUS_{carol_status}"},
        ]

    reactions = [{"emoji": "👍", "count": 2, "user_ids": [bob, carol]}, {"emoji": "❤️", "count": 1, "user_ids": [bob]}]
    # Each reader's status of alice's first two messages; carol has no message of her own on the page.
    own_status = {alice: ("DELIVERED", "SENT"), bob: ("READ", "READ"), carol: ("DELIVERED", "SENT")}
    for reader in (alice, bob, carol):
        got = await api(http, make_token(reader), "GET", f"/api/messages/{cid}")
        assert got.status_code == 200
        mine = reader == alice
        expected = [
            common(first)
            | {
                "content": "hello",
                "client_message_id": "c-1",
                "reactions": reactions,
                "reply_count": 1,
                "last_reply_at": reply["created_at"],
                "status": f"MESSAGE_STATUS_{own_status[reader][0]}",
                "recipients": statuses("READ", "DELIVERED") if mine else [],
            },
            common(sealed)
            | {
                "content_encrypted": secret,
                "encryption": {"algorithm": "x25519-aes256gcm", "key_id": "k-7"},
                "status": f"MESSAGE_STATUS_{own_status[reader][1]}",
                "recipients": statuses("READ", "SENT") if mine else [],
            },
            common(reply)
            | {
                "content": "hi back",
                "reply_to_id": first["message_id"],
                "status": "MESSAGE_STATUS_SENT",
                "recipients": []
                if reader != bob
                else [
                    {"user_id": alice, "status": "MESSAGE_STATUS_SENT"},
                    {"user_id": carol, "status": "MESSAGE_STATUS_SENT"},
                ],
            },
            common(doomed) | {"deleted": True, "deleted_at": deleted["deleted_at"], "status": "MESSAGE_STATUS_SENT"},
        ]
        assert got.json()["has_more"] is False and len(got.json()["messages"]) == len(expected)
        for message, want in zip(got.json()["messages"], expected, strict=True):
            assert message == want, (reader, message["seq"])
        # The bytes are what MessageToDict and JSONResponse make of the same reply.
        assert got.content == _before(json_format.Parse(got.content, message_pb2.ListMessagesResponse()))
