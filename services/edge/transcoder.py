"""A generic REST/JSON transcoder over the protos' `google.api.http` annotations.

At start, every annotated method (and its additional_bindings) becomes a route: its path template
compiles to a regex, and the call goes through one generic unary channel method. Requests are built
with `json_format` from the body (`body: "*"` or a named field), the path variables and the query
string; responses are rendered as `MessageToDict(preserving_proto_field_name=True,
always_print_fields_with_no_presence=True)` would render them, by a `JsonRenderer` compiled per
message type (`proto_json.py`: MessageToDict cost more CPU than anything else the edge did for a
history page). Semantics
follow google/api/http.proto and Envoy's gRPC-JSON transcoder: `{var}` matches one segment,
`{var=**}` and `**` match the rest, int64 renders as a string, timestamps as RFC 3339. Adding an
annotated RPC is all it takes to serve a new endpoint.

Enums: a JSON body or query value may name an enum value by its proto name (`MESSAGE_STATUS_READ`),
by its number, or by its short lowercase form (`read`: the name without the enum's common prefix,
as the API docs write it). `_normalize_enums` is the one place that maps the short form; responses
always use the proto name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import ModuleType
from typing import Any, cast
from urllib.parse import unquote

import grpc
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor, json_format, message_factory
from google.protobuf.message import Message

from services.edge.proto_json import JsonRenderer

_VERBS = ("get", "put", "post", "delete", "patch")


class BadRequest(Exception):
    """The HTTP request does not fit the method's request message; `code` is the error body's code."""

    def __init__(self, message: str, code: str = "INVALID_ARGUMENT") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Route:
    http_method: str
    template: str
    regex: re.Pattern[str]
    variables: dict[str, str]  # regex group name -> field path
    body: str
    method: descriptor.MethodDescriptor
    request_class: type[Message]
    response_class: type[Message]
    literal_segments: int
    is_primary: bool = True  # False for an additional_binding

    @property
    def grpc_path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"


def _compile(template: str) -> tuple[re.Pattern[str], dict[str, str], int]:
    """Path template (http.proto grammar) to a regex with one named group per variable."""
    path, _, verb = template.partition(":") if ":" in template.split("/")[-1] else (template, "", "")
    variables: dict[str, str] = {}
    literals = 0

    def segment_regex(segment: str) -> str:
        return {"*": "[^/]+", "**": ".+"}.get(segment, re.escape(segment))

    parts: list[str] = []
    for token in re.findall(r"\{[^}]*\}|[^/]+", path):
        if token.startswith("{"):
            field, _, sub = token[1:-1].partition("=")
            group = f"v{len(variables)}"
            variables[group] = field
            inner = "/".join(segment_regex(s) for s in (sub or "*").split("/"))
            parts.append(f"(?P<{group}>{inner})")
        else:
            parts.append(segment_regex(token))
            literals += token not in ("*", "**")
    pattern = "/" + "/".join(parts) + (re.escape(":" + verb) if verb else "")
    return re.compile(f"^{pattern}$"), variables, literals


def routes_from(modules: list[ModuleType]) -> list[Route]:
    routes: list[Route] = []
    for module in modules:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                options = method.GetOptions()
                if not options.HasExtension(annotations_pb2.http):
                    continue
                rule: http_pb2.HttpRule = options.Extensions[annotations_pb2.http]
                for binding in [rule, *rule.additional_bindings]:
                    kind = binding.WhichOneof("pattern")
                    if kind is None:
                        continue
                    http_method, template = (
                        (binding.custom.kind.upper(), binding.custom.path)
                        if kind == "custom"
                        else (kind.upper(), getattr(binding, kind))
                    )
                    regex, variables, literals = _compile(template)
                    routes.append(
                        Route(
                            http_method,
                            template,
                            regex,
                            variables,
                            binding.body,
                            method,
                            message_factory.GetMessageClass(method.input_type),
                            message_factory.GetMessageClass(method.output_type),
                            literals,
                            binding is rule,
                        )
                    )
    # Literal segments win over variables: GET /api/messages/search before /api/messages/{conversation_id}.
    routes.sort(key=lambda r: (-r.literal_segments, r.template))
    return routes


class Transcoder:
    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes

    def match(self, http_method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        """(route, path variables, path_known): path_known without a route means 405."""
        path_known = False
        for route in self.routes:
            found = route.regex.match(path)
            if not found:
                continue
            path_known = True
            if route.http_method == http_method:
                return route, {route.variables[g]: unquote(v) for g, v in found.groupdict().items()}, True
        return None, {}, path_known

    def allowed_methods(self, path: str) -> list[str]:
        """The methods some route serves at `path`: a 405's `Allow` header."""
        return sorted({route.http_method for route in self.routes if route.regex.match(path)})

    @staticmethod
    def build_request(route: Route, path_vars: dict[str, str], query: list[tuple[str, str]], body: Any) -> Message:
        request = route.request_class()
        desc = cast(descriptor.Descriptor, request.DESCRIPTOR)  # the stubs add upb's twin type
        try:
            if route.body == "*":
                if body is not None:
                    if not isinstance(body, dict):
                        raise BadRequest("the request body must be a JSON object")
                    json_format.ParseDict(_normalize_enums(body, desc), request)
            elif route.body and body is not None:
                json_format.ParseDict(_normalize_enums({route.body: body}, desc), request)
            fixed = set(path_vars) | ({route.body} if route.body else set())
            merged: dict[str, Any] = {}
            if route.body != "*":
                for key, value in query:
                    if key.split(".")[0] not in fixed:
                        _set_path(merged, key, value, desc)
            for key, value in path_vars.items():
                _set_path(merged, key, value, desc)
            json_format.ParseDict(_normalize_enums(merged, desc), request)
        except json_format.ParseError as exc:
            raise BadRequest(str(exc)) from None
        return request

    @staticmethod
    def render_json(response: Message) -> bytes:
        """The response body: the bytes Starlette's JSONResponse makes of `render(response)`."""
        return _RESPONSES.render_json(response)

    @staticmethod
    def callable_for(channel: grpc.aio.Channel, route: Route) -> grpc.aio.UnaryUnaryMultiCallable[Any, Any]:
        return channel.unary_unary(
            route.grpc_path,
            request_serializer=route.request_class.SerializeToString,
            response_deserializer=route.response_class.FromString,
        )


def _set_path(target: dict[str, Any], dotted: str, raw: str, desc: descriptor.Descriptor) -> None:
    """Put a query or path value at a dotted field path, typed for json_format (repeated fields
    take repeated keys or comma-separated values; a single-value field given twice is refused rather
    than left to whichever value came last, which a proxy and the edge might each pick differently)."""
    names = dotted.split(".")
    for name in names[:-1]:
        field = desc.fields_by_name.get(name)
        if field is None or field.message_type is None:
            raise BadRequest(f"unknown parameter {dotted!r}")
        target = target.setdefault(name, {})
        desc = field.message_type
    field = desc.fields_by_name.get(names[-1])
    if field is None:
        raise BadRequest(f"unknown parameter {dotted!r}")
    if field.is_repeated:
        target.setdefault(names[-1], []).extend(_scalar(field, v) for v in raw.split(",") if v != "")
    elif names[-1] in target:
        raise BadRequest(f"parameter {dotted!r} takes one value and was given more than once", "DUPLICATE_PARAMETER")
    else:
        target[names[-1]] = _scalar(field, raw)


def _scalar(field: descriptor.FieldDescriptor, raw: str) -> Any:
    if field.type == descriptor.FieldDescriptor.TYPE_BOOL:
        if raw not in ("true", "false"):
            raise BadRequest(f"{field.name} must be true or false")
        return raw == "true"
    if field.message_type is not None and field.message_type.full_name not in (
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
    ):
        raise BadRequest(f"{field.name} cannot be set from the query string")
    return raw


def enum_prefix(enum: descriptor.EnumDescriptor) -> str:
    """`MESSAGE_STATUS_` for MessageStatus: what the short form leaves out."""
    names: list[str] = [str(v.name) for v in enum.values]
    prefix = names[0]
    for name in names[1:]:
        while not name.startswith(prefix):
            prefix = prefix[:-1]
    return prefix[: prefix.rfind("_") + 1]


def enum_short_names(enum: descriptor.EnumDescriptor) -> list[str]:
    prefix = enum_prefix(enum)
    return [v.name[len(prefix) :].lower() for v in enum.values if v.number != 0]


def _enum_value(enum: descriptor.EnumDescriptor, value: Any) -> Any:
    if isinstance(value, str) and value not in enum.values_by_name:
        full = enum_prefix(enum) + value.upper()
        if value == value.lower() and full in enum.values_by_name:
            return full
    return value


def _normalize_enums(value: Any, desc: descriptor.Descriptor) -> Any:
    """A copy of a JSON object for `desc` with short enum names replaced by proto names."""
    if not isinstance(value, dict) or desc.full_name.startswith("google.protobuf."):
        return value
    out: dict[Any, Any] = {}
    for key, item in value.items():
        field = desc.fields_by_name.get(key) if isinstance(key, str) else None
        if field is None:
            out[key] = item
        elif field.enum_type is not None:
            out[key] = (
                [_enum_value(field.enum_type, v) for v in item]
                if field.is_repeated and isinstance(item, list)
                else _enum_value(field.enum_type, item)
            )
        elif field.message_type is not None and not field.message_type.GetOptions().map_entry:
            out[key] = (
                [_normalize_enums(v, field.message_type) for v in item]
                if field.is_repeated and isinstance(item, list)
                else _normalize_enums(item, field.message_type)
            )
        else:
            out[key] = item
    return out


_RESPONSES = JsonRenderer(always_print_fields_with_no_presence=True)
