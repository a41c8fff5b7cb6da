"""`GET /openapi.json`: an OpenAPI 3.0 document built from the same descriptors and routes the
transcoder serves, so it cannot drift from what is served.

Schemas follow proto3 JSON as the edge renders it (`preserving_proto_field_name`, every field
printed): 64-bit integers are strings, `google.protobuf.Timestamp` is a date-time string, enums are
string enums (requests also accept the short lowercase form, see the transcoder), repeated fields are
arrays, maps are objects, and messages are `$ref`s under `components/schemas`. Every operation
declares the bearer scheme and the one error body for 4xx/5xx.
"""

from __future__ import annotations

import re
from typing import Any, cast

from google.protobuf import descriptor

from services.edge.files_openapi import FILE_PATHS
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
    "properties": {"error": {
        "type": "object",
        "required": ["code", "message", "status", "request_id"],
        "properties": {
            "code": {"type": "string", "description": "Machine-readable, e.g. NOT_PARTICIPANT."},
            "message": {"type": "string"},
            "status": {"type": "integer"},
            "request_id": {"type": "string"},
        },
    }},
}
ERROR_STATUSES = ("400", "401", "403", "404", "405", "409", "413", "415", "429", "500", "501", "503")


def _name(desc: descriptor.Descriptor | descriptor.EnumDescriptor) -> str:
    return str(desc.full_name).removeprefix("chat.v1.").replace(".", "_")


class _Builder:
    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}

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
        return {"type": "array", "items": single} if field.is_repeated else single

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
            if not request:
                # The edge prints every field without presence, so responses always carry them.
                schema["required"] = [f.name for f in desc.fields
                                      if f.containing_oneof is None and not f.has_presence]
                if not schema["required"]:
                    del schema["required"]
            self.schemas[name] = schema
        return {"$ref": f"#/components/schemas/{name}"}

    def operation(self, route: Route) -> dict[str, Any]:
        method = route.method
        request_desc = cast(descriptor.Descriptor, route.request_class.DESCRIPTOR)  # the stubs add upb's twin
        path_fields = set(route.variables.values())
        parameters: list[dict[str, Any]] = []
        for field_path in route.variables.values():
            parameters.append({"name": field_path, "in": "path", "required": True,
                               "schema": self._path_field(request_desc, field_path)})
        if route.body != "*":
            for field in request_desc.fields:
                if field.name in path_fields or field.name == route.body or field.message_type is not None:
                    continue
                schema = self.field(field, request=True)
                parameter: dict[str, Any] = {"name": field.name, "in": "query", "required": False, "schema": schema}
                if field.is_repeated:
                    parameter.update(style="form", explode=True)
                parameters.append(parameter)
        operation: dict[str, Any] = {
            "operationId": method.name if route.is_primary else f"{method.name}_{route.http_method.lower()}",
            "tags": [method.containing_service.name],
            "parameters": parameters,
            "security": [{"bearer": []}],
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {
                    "schema": self.message_ref(cast(descriptor.Descriptor, route.response_class.DESCRIPTOR),
                                               request=False)}}},
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
            operation["requestBody"] = {"required": route.body != "*",
                                        "content": {"application/json": {"schema": body_schema}}}
        return operation

    def _body_schema(self, desc: descriptor.Descriptor, path_fields: set[str]) -> dict[str, Any]:
        """The whole request message minus the fields bound from the path."""
        if not path_fields:
            return self.message_ref(desc, request=True)
        return {"type": "object", "properties": {
            f.name: self.field(f, request=True) for f in desc.fields if f.name not in path_fields}}

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


def openapi_path(template: str) -> str:
    """`/api/messages/{message_id}` stays; `{name=**}` becomes `{name}`."""
    return re.sub(r"\{([^}=]+)=[^}]*\}", r"{\1}", template)


def build_openapi(routes: list[Route], title: str = "chatmesh", version: str = "1") -> dict[str, Any]:
    builder = _Builder()
    paths: dict[str, dict[str, Any]] = {}
    for route in sorted(routes, key=lambda r: r.template):
        paths.setdefault(openapi_path(route.template), {})[route.http_method.lower()] = builder.operation(route)
    paths.update(FILE_PATHS)  # attachment bytes: plain HTTP routes (services/edge/uploads.py)
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": version,
                 "description": "REST/JSON over the chat.v1 gRPC services, transcoded from their "
                                "google.api.http annotations. Real-time events: the WebSocket at /ws."},
        "paths": paths,
        "components": {
            "schemas": builder.schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "responses": {
                "Error": {"description": "The one error body",
                          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "RateLimited": {"description": "Over a per-user limit: retry after the given seconds",
                                "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
                                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "Unavailable": {"description": "An upstream is away (UNAVAILABLE) or too slow (DEADLINE_EXCEEDED):"
                                               " send the same request again after the given seconds",
                                "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
                                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        },
        "security": [{"bearer": []}],
    }
