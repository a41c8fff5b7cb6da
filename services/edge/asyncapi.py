"""`GET /asyncapi.json`: an AsyncAPI 3.0 document of the WebSocket at /ws, built from frame_catalog.py.

The document describes the edge: frames a client sends are its `receive` operations (with their
replies), frames it sends are `send` operations, all on the one channel `/ws`. Payloads are whole
frames; a frame's `data` is either a JSON schema of its own or a proto message in proto3 JSON, whose
schema comes from the same builder as /openapi.json (without `required`: event frames leave out fields
at their default value). Schemas are AsyncAPI's default format (JSON Schema draft 07), so the
OpenAPI-only `example` becomes `examples`. The server's host is the one the document was asked on.
`x-close-codes` and `x-error-codes` list what the socket closes with and the edge's own error codes.
"""

from __future__ import annotations

import copy
import functools
import re
from typing import Any

from google.protobuf import descriptor

from services.edge.frame_catalog import CLOSE_CODES, EDGE_ERROR_CODES, FRAMES, Frame
from services.edge.openapi import LICENSE, SchemaBuilder

DEFAULT_HOST = "127.0.0.1:8780"
CHANNEL = "#/channels/socket"
DESCRIPTION = """The chatmesh WebSocket: JSON text frames `{"type", "id"?, "data"}` both ways.

Authenticate with `Authorization: Bearer` on the upgrade or with an `auth` frame first; `ready` follows.
Frames with an `id` get a reply with that id (`ack`, `pong` or `error`). Durable events carry `event_id`
and `resume_token`: acknowledge each one (`chat:message_delivered` for messages, `events_ack` for the
rest), or it is pushed again after 2, 4 and 8 s (arriving at about 0, 2, 6 and 14 s), and, for a message,
again in the next connection's offline buffer. Keep the last resume_token and send it in `auth` when
you reconnect. 64-bit integers (`seq`, `unread_count`) are decimal strings, as in proto3 JSON and REST.

The human reference, with a ten-line raw client: docs/websocket.md."""


def _key(frame: Frame) -> str:
    """A component name AsyncAPI accepts (`[A-Za-z0-9._-]`), by direction, since a type can go both ways
    (`chat:message_delivered`): `client.chat.message_send`, `edge.ready`."""
    return ("client." if frame.client else "edge.") + frame.type.replace(":", ".")


def _reply_key(frame_type: str) -> str:
    return "edge." + frame_type.replace(":", ".")


def _operation_id(frame: Frame) -> str:
    words = re.split(r"[:_]", frame.type)
    return ("receive" if frame.client else "send") + "".join(w.capitalize() for w in words)


def json_schema(schema: Any) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema draft 07: `example` becomes `examples`."""
    if isinstance(schema, dict):
        converted = {k: json_schema(v) for k, v in schema.items() if k != "example"}
        if "example" in schema:
            converted["examples"] = [schema["example"]]
        return converted
    if isinstance(schema, list):
        return [json_schema(v) for v in schema]
    return schema


class _Schemas:
    def __init__(self) -> None:
        self.builder = SchemaBuilder(all_printed=False)

    def data(self, data: Any, request: bool) -> Any:
        if isinstance(data, descriptor.Descriptor):
            return self.builder.message_ref(data, request=request)
        if isinstance(data, dict):
            return {k: [self.data(v, request) for v in value] if k == "anyOf" else value for k, value in data.items()}
        return data


def _payload(frame: Frame, schemas: _Schemas) -> dict[str, Any]:
    properties: dict[str, Any] = {"type": {"type": "string", "const": frame.type}}
    required = ["type"]
    if frame.client:
        properties["id"] = {
            "type": ["string", "number"],
            "description": "Optional: the reply carries it back (without it, only errors answer).",
        }
    for name, schema in frame.envelope.items():
        properties[name] = schema if name != "id" else {"type": ["string", "number", "null"], **schema}
    if frame.type != "pong":
        properties["data"] = schemas.data(frame.data, request=frame.client)
        required.append("data")
    if frame.durable:
        required += ["event_id", "resume_token"]
    return {"type": "object", "required": required, "properties": properties}


@functools.cache
def build_asyncapi(host: str = DEFAULT_HOST, secure: bool = False) -> dict[str, Any]:
    """The document (cached: treat it as read-only)."""
    schemas = _Schemas()
    messages: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for frame in FRAMES:
        key = _key(frame)
        kind = (
            "durable event"
            if frame.durable
            else "ephemeral event"
            if frame.ephemeral
            else ("client frame" if frame.client else "edge frame")
        )
        messages[key] = {
            "name": frame.type,
            "title": frame.type,
            "summary": frame.summary,
            "description": frame.description,
            "contentType": "application/json",
            "payload": _payload(frame, schemas),
            "examples": [{"name": key, "payload": frame.example}],
            "tags": [{"name": kind}],
        }
        operation: dict[str, Any] = {
            "action": "receive" if frame.client else "send",
            "channel": {"$ref": CHANNEL},
            "summary": frame.summary,
            "messages": [{"$ref": f"{CHANNEL}/messages/{key}"}],
        }
        if frame.replies:
            operation["reply"] = {
                "channel": {"$ref": CHANNEL},
                "messages": [{"$ref": f"{CHANNEL}/messages/{_reply_key(r)}"} for r in frame.replies],
            }
        operations[_operation_id(frame)] = operation
    return {
        "asyncapi": "3.1.0",
        "info": {
            "title": "chatmesh WebSocket",
            "version": "1",
            "description": DESCRIPTION,
            "license": LICENSE,
            "x-close-codes": {str(code): text for code, text in CLOSE_CODES.items()},
            "x-error-codes": EDGE_ERROR_CODES,
        },
        "defaultContentType": "application/json",
        "servers": {
            "edge": {
                "host": host,
                "protocol": "wss" if secure else "ws",
                "pathname": "/ws",
                "description": "This edge (any edge replica serves every user).",
                "security": [{"$ref": "#/components/securitySchemes/bearer"}],
            }
        },
        "channels": {
            "socket": {
                "address": "/ws",
                "title": "The socket",
                "description": "One per device. Every frame, both ways, is a message of this channel.",
                "messages": {key: {"$ref": f"#/components/messages/{key}"} for key in messages},
                "bindings": {
                    "ws": {
                        "method": "GET",
                        "bindingVersion": "0.1.0",
                        "headers": {
                            "type": "object",
                            "properties": {
                                "Authorization": {
                                    "type": "string",
                                    "description": "Bearer <JWT>: instead of an auth frame.",
                                }
                            },
                        },
                    }
                },
            }
        },
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": json_schema({k: v for k, v in schemas.builder.schemas.items() if k != "Error"}),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "On the upgrade, or as the first frame's data.token.",
                }
            },
        },
    }


def document_for(host: str | None, secure: bool) -> dict[str, Any]:
    """The document with the server the client asked on (built once; copied per request)."""
    built = build_asyncapi()
    document = copy.copy(built)
    document["servers"] = {
        "edge": {**built["servers"]["edge"], "host": host or DEFAULT_HOST, "protocol": "wss" if secure else "ws"}
    }
    return document
