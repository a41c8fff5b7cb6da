"""`GET /openapi.json`: an OpenAPI 3.0 document built from the same descriptors and routes the
transcoder serves, so it cannot drift from what is served.

Schemas follow proto3 JSON as the edge renders it (`preserving_proto_field_name`, every field
printed): 64-bit integers are strings, `google.protobuf.Timestamp` is a date-time string, enums are
string enums (requests also accept the short lowercase form, see the transcoder), repeated fields are
arrays, maps are objects, and messages are `$ref`s under `components/schemas`. Every operation
declares the bearer scheme and the one error body for 4xx/5xx. Summaries, descriptions, request
bounds, examples and the one name of a shared path parameter come from openapi_hints.py; the document
passes `redocly lint` (recommended rules) with no error (tests/test_openapi_lint.py).

64-bit integers (`seq`, `unread_count`, sizes) stay strings, as proto3's JSON mapping has them: every
int64 field reads the same way in REST bodies and WebSocket frames, the JSON of the gRPC tools
(grpcurl) agrees, and no value can lose precision in a JavaScript number. Requests accept a number too.
Changing `unread_count` to int32 would change its JSON type for every client (buf calls that breaking).
"""

from __future__ import annotations

import re
from typing import Any, cast

from google.protobuf import descriptor

from services.edge import openapi_hints as hints
from services.edge.files_openapi import FILE_PATHS, FILE_TAG
from services.edge.transcoder import Route, enum_short_names

FD = descriptor.FieldDescriptor
_INT64 = {FD.TYPE_INT64, FD.TYPE_UINT64, FD.TYPE_SINT64, FD.TYPE_FIXED64, FD.TYPE_SFIXED64}
_INT32 = {FD.TYPE_INT32, FD.TYPE_UINT32, FD.TYPE_SINT32, FD.TYPE_FIXED32, FD.TYPE_SFIXED32}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?s$"},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.FieldMask": {"type": "string"},
}
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "status", "request_id"],
            "properties": {
                "code": {"type": "string", "description": "Machine-readable, e.g. NOT_PARTICIPANT."},
                "message": {"type": "string"},
                "status": {"type": "integer"},
                "request_id": {"type": "string"},
            },
        }
    },
}
ERROR_STATUSES = ("400", "401", "403", "404", "405", "409", "413", "415", "429", "500", "501", "503")
LICENSE = {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"}
DESCRIPTION = """REST/JSON over the chat.v1 gRPC services, transcoded from their `google.api.http` annotations.

Authenticate with `Authorization: Bearer <JWT>` (the user is the token's `sub`). Every error is one
body, `{"error": {"code", "message", "status", "request_id"}}`, with a machine-readable `code`;
a 503 or 429 says when to retry in `Retry-After`.

64-bit integers (`seq`, `unread_count`, sizes) are decimal strings, as in proto3's JSON mapping, in
responses and in WebSocket frames alike; requests accept numbers too.

Real-time events come over the WebSocket at `/ws`, described by `/asyncapi.json` and docs/websocket.md."""


def _name(desc: descriptor.Descriptor | descriptor.EnumDescriptor) -> str:
    return str(desc.full_name).removeprefix("chat.v1.").replace(".", "_")


class SchemaBuilder:
    def __init__(self, all_printed: bool = True) -> None:
        """`all_printed`: responses print every field without presence (REST); False for WebSocket
        event frames, which leave out fields at their default value, so no field is required."""
        self.schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
        self._all_printed = all_printed

    def enum(self, enum: descriptor.EnumDescriptor, request: bool) -> dict[str, Any]:
        values: list[Any] = [v.name for v in enum.values]
        if request:
            return {"type": "string", "enum": values + enum_short_names(enum)}
        return {"type": "string", "enum": values}

    def field(self, field: descriptor.FieldDescriptor, request: bool) -> dict[str, Any]:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self._single(value, request)}
        single = self._single(field, request)
        if "$ref" in single:  # a $ref takes no siblings in OpenAPI 3.0
            return {"type": "array", "items": single} if field.is_repeated else single
        if request:
            owner = cast(descriptor.Descriptor, field.containing_type)  # a field always has one
            single.update(hints.request_bounds(owner.full_name, field.name))
        if not field.is_repeated and (example := hints.example_of(field.name)) is not None:
            single["example"] = example
        schema = {"type": "array", "items": single} if field.is_repeated else single
        if comment := hints.comments().get(field.full_name):
            schema["description"] = hints.prose(comment)
        return schema

    def _single(self, field: descriptor.FieldDescriptor, request: bool) -> dict[str, Any]:
        if field.message_type is not None:
            return self.message_ref(field.message_type, request)
        if field.enum_type is not None:
            return self.enum(field.enum_type, request)
        if field.type in _INT64:
            return {"type": "string", "format": "int64", "pattern": r"^-?[0-9]+$"}
        if field.type in _INT32:
            return {"type": "integer", "format": "int32"}
        if field.type in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
            return {"type": "number"}
        if field.type == FD.TYPE_BOOL:
            return {"type": "boolean"}
        if field.type == FD.TYPE_BYTES:
            return {"type": "string", "format": "byte"}
        return {"type": "string"}

    def message_ref(self, desc: descriptor.Descriptor, request: bool) -> dict[str, Any]:
        if desc.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[desc.full_name])
        name = _name(desc) + ("_Input" if request else "")
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder: recursive messages refer to themselves
            properties = {f.name: self.field(f, request) for f in desc.fields}
            schema: dict[str, Any] = {"type": "object", "properties": properties}
            if comment := hints.comments().get(desc.full_name):
                schema["description"] = hints.prose(comment)
            if not request and self._all_printed:
                # The edge prints every field without presence, so responses always carry them.
                schema["required"] = [f.name for f in desc.fields if f.containing_oneof is None and not f.has_presence]
                if not schema["required"]:
                    del schema["required"]
            self.schemas[name] = schema
        return {"$ref": f"#/components/schemas/{name}"}

    def operation(self, route: Route, renames: dict[str, str]) -> dict[str, Any]:
        """`renames`: path parameters named otherwise in the document (a template shared with another)."""
        method = route.method
        request_desc = cast(descriptor.Descriptor, route.request_class.DESCRIPTOR)  # the stubs add upb's twin
        path_fields = set(route.variables.values())
        parameters: list[dict[str, Any]] = []
        for field_path in route.variables.values():
            parameter: dict[str, Any] = {
                "name": renames.get(field_path, field_path),
                "in": "path",
                "required": True,
                "schema": self._path_field(request_desc, field_path),
            }
            if field_path in renames:  # say which id this one is
                noun = field_path.removesuffix("_id").replace("_", " ")
                parameter["description"] = f"The {noun}'s id (`{field_path}`)."
            parameters.append(parameter)
        if route.body != "*":
            for field in request_desc.fields:
                if field.name in path_fields or field.name == route.body or field.message_type is not None:
                    continue
                schema = self.field(field, request=True)
                query: dict[str, Any] = {"name": field.name, "in": "query", "required": False, "schema": schema}
                if description := schema.pop("description", None):
                    query["description"] = description
                if field.is_repeated:
                    query.update(style="form", explode=True)
                parameters.append(query)
        summary, description = hints.summary_and_description(hints.comments().get(method.full_name, ""), method.name)
        operation: dict[str, Any] = {
            "operationId": method.name if route.is_primary else f"{method.name}_{route.http_method.lower()}",
            "summary": summary,
            **({"description": description} if description else {}),
            "tags": [method.containing_service.name],
            "parameters": parameters,
            "security": [{"bearer": []}],
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {
                        "application/json": {
                            "schema": self.message_ref(
                                cast(descriptor.Descriptor, route.response_class.DESCRIPTOR), request=False
                            )
                        }
                    },
                },
                **{status: {"$ref": "#/components/responses/Error"} for status in ERROR_STATUSES},
                "429": {"$ref": "#/components/responses/RateLimited"},
                "503": {"$ref": "#/components/responses/Unavailable"},
            },
        }
        if route.body:
            if route.body == "*":
                body_schema = self._body_schema(request_desc, path_fields)
            else:
                body_schema = self.field(request_desc.fields_by_name[route.body], request=True)
            operation["requestBody"] = {
                "required": route.body != "*",
                "content": {"application/json": {"schema": body_schema}},
            }
        return operation

    def _body_schema(self, desc: descriptor.Descriptor, path_fields: set[str]) -> dict[str, Any]:
        """The whole request message minus the fields bound from the path."""
        if not path_fields:
            return self.message_ref(desc, request=True)
        return {
            "type": "object",
            "properties": {f.name: self.field(f, request=True) for f in desc.fields if f.name not in path_fields},
        }

    def _path_field(self, desc: descriptor.Descriptor, field_path: str) -> dict[str, Any]:
        names = field_path.split(".")
        for name in names[:-1]:
            nested = desc.fields_by_name[name].message_type
            assert nested is not None, field_path  # the route was checked when it was built
            desc = nested
        schema = self.field(desc.fields_by_name[names[-1]], request=True)
        if schema.get("type") == "string" and "enum" not in schema:
            schema = {**schema, "minLength": 1}
        return schema


def openapi_path(template: str, renames: dict[str, str] | None = None) -> str:
    """`/api/messages/{message_id}` stays (or takes its name in `renames`); `{name=**}` becomes `{name}`."""
    renames = renames or {}
    return re.sub(r"\{([^}=]+)(=[^}]*)?\}", lambda m: "{" + renames.get(m[1], m[1]) + "}", template)


def openapi_paths(routes: list[Route]) -> dict[str, str]:
    """Each route template's path in the document (templates equal but for names share one path)."""
    renames = hints.shared_names(sorted({r.template for r in routes}))
    return {template: openapi_path(template, names) for template, names in renames.items()}


def build_openapi(routes: list[Route], title: str = "chatmesh", version: str = "1") -> dict[str, Any]:
    builder = SchemaBuilder()
    paths: dict[str, dict[str, Any]] = {}
    renames = hints.shared_names(sorted({r.template for r in routes}))
    for route in sorted(routes, key=lambda r: r.template):
        names = renames[route.template]
        paths.setdefault(openapi_path(route.template, names), {})[route.http_method.lower()] = builder.operation(
            route, names
        )
    paths.update(FILE_PATHS)  # attachment bytes: plain HTTP routes (services/edge/uploads.py)
    services = {r.method.containing_service for r in routes}
    tags = [
        {"name": s.name, "description": hints.prose(hints.comments().get(s.full_name, s.name))}
        for s in sorted(services, key=lambda s: s.name)
    ]
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": version, "description": DESCRIPTION, "license": LICENSE},
        "servers": [{"url": "/", "description": "The edge serving this document"}],
        "tags": [*tags, FILE_TAG],
        "paths": paths,
        "components": {
            "schemas": builder.schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "responses": {
                "Error": {
                    "description": "The one error body",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                },
                "RateLimited": {
                    "description": "Over a per-user limit: retry after the given seconds",
                    "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                },
                "Unavailable": {
                    "description": "An upstream is away (UNAVAILABLE) or too slow (DEADLINE_EXCEEDED):"
                    " send the same request again after the given seconds",
                    "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                },
            },
        },
        "security": [{"bearer": []}],
    }
