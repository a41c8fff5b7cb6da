"""A generic REST/JSON transcoder over the protos' `google.api.http` annotations.

At start, every annotated method (and its additional_bindings) becomes a route: its path template
compiles to a regex, and the call goes through one generic unary channel method. Requests are built
with `json_format` from the body (`body: "*"` or a named field), the path variables and the query
string; responses are rendered as `MessageToDict(preserving_proto_field_name=True,
always_print_fields_with_no_presence=True)` would render them, by a `JsonRenderer` compiled per
message type (MessageToDict cost more CPU than anything else the edge did for a history page). Semantics
follow google/api/http.proto and Envoy's gRPC-JSON transcoder: `{var}` matches one segment,
`{var=**}` and `**` match the rest, int64 renders as a string, timestamps as RFC 3339. Adding an
annotated RPC is all it takes to serve a new endpoint.

Enums: a JSON body or query value may name an enum value by its proto name (`MESSAGE_STATUS_READ`),
by its number, or by its short lowercase form (`read`: the name without the enum's common prefix,
as the API docs write it). `_normalize_enums` is the one place that maps the short form; responses
always use the proto name.
"""

from __future__ import annotations

import binascii
import json
import keyword
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from types import ModuleType
from typing import Any
from urllib.parse import unquote

import grpc
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor, descriptor_pool, json_format, message_factory
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is an optional speed-up; the output is the same without it
    orjson = None  # type: ignore[assignment]

_VERBS = ("get", "put", "post", "delete", "patch")


class BadRequest(Exception):
    """The HTTP request does not fit the method's request message."""


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
                        (binding.custom.kind.upper(), binding.custom.path) if kind == "custom"
                        else (kind.upper(), getattr(binding, kind)))
                    regex, variables, literals = _compile(template)
                    routes.append(Route(
                        http_method, template, regex, variables, binding.body, method,
                        message_factory.GetMessageClass(method.input_type),
                        message_factory.GetMessageClass(method.output_type), literals, binding is rule,
                    ))
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

    @staticmethod
    def build_request(route: Route, path_vars: dict[str, str], query: list[tuple[str, str]],
                      body: Any) -> Message:
        request = route.request_class()
        try:
            if route.body == "*":
                if body is not None:
                    if not isinstance(body, dict):
                        raise BadRequest("the request body must be a JSON object")
                    json_format.ParseDict(_normalize_enums(body, request.DESCRIPTOR), request)
            elif route.body and body is not None:
                json_format.ParseDict(_normalize_enums({route.body: body}, request.DESCRIPTOR), request)
            fixed = set(path_vars) | ({route.body} if route.body else set())
            merged: dict[str, Any] = {}
            if route.body != "*":
                for key, value in query:
                    if key.split(".")[0] not in fixed:
                        _set_path(merged, key, value, request.DESCRIPTOR)
            for key, value in path_vars.items():
                _set_path(merged, key, value, request.DESCRIPTOR)
            json_format.ParseDict(_normalize_enums(merged, request.DESCRIPTOR), request)
        except json_format.ParseError as exc:
            raise BadRequest(str(exc)) from None
        return request

    @staticmethod
    def render(response: Message) -> dict[str, Any]:
        """The response as JSON-ready data: what MessageToDict returns, keys in the same order."""
        return _RESPONSES.render(response)

    @staticmethod
    def render_json(response: Message) -> bytes:
        """The response body: the bytes Starlette's JSONResponse makes of `render(response)`."""
        return _RESPONSES.render_json(response)

    @staticmethod
    def callable_for(channel: grpc.aio.Channel, route: Route) -> grpc.aio.UnaryUnaryMultiCallable:
        return channel.unary_unary(route.grpc_path, request_serializer=route.request_class.SerializeToString,
                                   response_deserializer=route.response_class.FromString)


def _set_path(target: dict[str, Any], dotted: str, raw: str, desc: descriptor.Descriptor) -> None:
    """Put a query or path value at a dotted field path, typed for json_format (repeated fields
    take repeated keys or comma-separated values)."""
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
    else:
        target[names[-1]] = _scalar(field, raw)


def _scalar(field: descriptor.FieldDescriptor, raw: str) -> Any:
    if field.type == descriptor.FieldDescriptor.TYPE_BOOL:
        if raw not in ("true", "false"):
            raise BadRequest(f"{field.name} must be true or false")
        return raw == "true"
    if field.message_type is not None and field.message_type.full_name not in (
            "google.protobuf.Timestamp", "google.protobuf.Duration"):
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
    return [v.name[len(prefix):].lower() for v in enum.values if v.number != 0]


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
            out[key] = [_enum_value(field.enum_type, v) for v in item] if field.is_repeated and isinstance(
                item, list) else _enum_value(field.enum_type, item)
        elif field.message_type is not None and not field.message_type.GetOptions().map_entry:
            out[key] = [_normalize_enums(v, field.message_type) for v in item] if field.is_repeated and isinstance(
                item, list) else _normalize_enums(item, field.message_type)
        else:
            out[key] = item
    return out


# Rendering responses. MessageToDict walks the descriptor of every message it meets, field by field,
# twice (set fields, then defaults): ~1.4 ms of the edge's CPU for a history page of 50, and
# JSONResponse's json.dumps another ~0.15 ms. JsonRenderer writes one plain function per message
# type, once, that reads each field once (~0.3 ms a page); orjson writes the same bytes in ~15 us.

_C = descriptor.FieldDescriptor
_INT64_CPPTYPES = frozenset({_C.CPPTYPE_INT64, _C.CPPTYPE_UINT64})
_FLOAT_CPPTYPES = frozenset({_C.CPPTYPE_FLOAT, _C.CPPTYPE_DOUBLE})
_TS_SECONDS_MIN, _TS_SECONDS_MAX = -62135596800, 253402300799
_UNIX_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_DAYS: dict[int, str] = {}  # day since the epoch -> "YYYY-MM-DD": a page's messages share a few days


def _timestamp(ts: Timestamp) -> str:
    """Timestamp.ToJsonString's text (RFC 3339, Z, 0, 3, 6 or 9 fractional digits) at half its cost."""
    seconds, nanos = ts.seconds, ts.nanos
    if not (_TS_SECONDS_MIN <= seconds <= _TS_SECONDS_MAX and 0 <= nanos < 1_000_000_000):
        return str(ts.ToJsonString())  # raises, as json_format does
    days, seconds = divmod(seconds, 86_400)
    day = _DAYS.get(days)
    if day is None:
        if len(_DAYS) > 4096:
            _DAYS.clear()
        day = _DAYS[days] = date.fromordinal(_UNIX_EPOCH_ORDINAL + days).isoformat()
    hours, seconds = divmod(seconds, 3600)
    text = "%sT%02d:%02d:%02d" % (day, hours, seconds // 60, seconds % 60)
    if not nanos:
        return text + "Z"
    if not nanos % 1_000_000:
        return "%s.%03dZ" % (text, nanos // 1_000_000)
    if not nanos % 1_000:
        return "%s.%06dZ" % (text, nanos // 1_000)
    return "%s.%09dZ" % (text, nanos)


def _base64(value: bytes) -> str:
    return binascii.b2a_base64(value, newline=False).decode("ascii")


def _json_enum_option_exists() -> bool:
    """protobuf's `pb.enumvalue.json` option renames enum values in JSON; we do not compile those."""
    try:
        descriptor_pool.Default().FindExtensionByName("pb.enumvalue.json")
    except KeyError:
        return False
    return True


class JsonRenderer:
    """`MessageToDict(m, preserving_proto_field_name=True, always_print_fields_with_no_presence=…)`,
    compiled per message type, with the same result: the same keys in the same order (set fields by
    number, then the unset fields without presence, when printed, in declaration order), int64 as
    strings, enums by name (an unknown number as the number), bytes as base64, Timestamps as RFC 3339.
    What it does not compile (maps, floats, other well-known types, closed enums, extensions) goes to
    MessageToDict itself. tests/test_history_render.py holds it to MessageToDict, byte for byte.
    """

    def __init__(self, *, always_print_fields_with_no_presence: bool = True) -> None:
        self._always = always_print_fields_with_no_presence
        self._functions: dict[descriptor.Descriptor, Callable[[Any], Any]] = {}
        self._names: dict[descriptor.Descriptor, str] = {}
        self._namespace: dict[str, Any] = {"_b64": _base64}
        self._custom_enum_names = _json_enum_option_exists()

    def render(self, message: Message) -> Any:
        function = self._functions.get(message.DESCRIPTOR) or self._compile(message.DESCRIPTOR)
        return function(message)

    def render_json(self, message: Message) -> bytes:
        """The bytes Starlette's JSONResponse writes for `render(message)` (compact, UTF-8, unescaped)."""
        if orjson is not None:
            return bytes(orjson.dumps(self.render(message)))
        return json.dumps(self.render(message), ensure_ascii=False, allow_nan=False, indent=None,
                          separators=(",", ":")).encode("utf-8")

    def _fallback(self, message: Message) -> Any:
        return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=self._always)

    def _compilable(self, desc: descriptor.Descriptor) -> bool:
        if desc.full_name.startswith("google.protobuf.") or desc.extension_ranges:
            return False
        for field in desc.fields:
            if field.cpp_type in _FLOAT_CPPTYPES or (
                    field.message_type is not None and field.message_type.GetOptions().map_entry):
                return False
            if field.enum_type is not None and (field.enum_type.is_closed or self._custom_enum_names
                                                or field.enum_type.full_name == "google.protobuf.NullValue"):
                return False
        return True

    def _compile(self, desc: descriptor.Descriptor) -> Callable[[Any], Any]:
        """The function for `desc`, and for the types it nests; the name is taken first (recursive types)."""
        name = self._names[desc] = f"_r{len(self._names)}"
        function: Callable[[Any], Any]
        if desc.full_name == Timestamp.DESCRIPTOR.full_name:
            function = _timestamp
        elif not self._compilable(desc):
            function = self._fallback
        else:
            exec(self._source(name, desc), self._namespace)  # noqa: S102 - source built from descriptors only
            function = self._namespace[name]
        self._namespace[name] = self._functions[desc] = function
        return function

    def _value(self, field: descriptor.FieldDescriptor, var: str) -> str:
        """An expression for the JSON of one value of `field` held in `var`."""
        if field.message_type is not None:
            nested = self._names.get(field.message_type)
            if nested is None:
                self._compile(field.message_type)
                nested = self._names[field.message_type]
            return f"{nested}({var})"
        if field.enum_type is not None:
            names = f"_e{len(self._namespace)}"
            self._namespace[names] = {v.number: v.name for v in field.enum_type.values}
            return f"{names}.get({var}, {var})"
        if field.type == _C.TYPE_BYTES:
            return f"_b64({var})"
        if field.cpp_type in _INT64_CPPTYPES:
            return f"str({var})"
        return var  # str, bool, int32, uint32: json_format returns them as they are

    def _default(self, field: descriptor.FieldDescriptor) -> str:
        if field.is_repeated:
            return "[]"
        if field.enum_type is not None:
            zero = field.enum_type.values_by_number.get(0)
            return repr(zero.name if zero is not None else 0)
        if field.type == _C.TYPE_BYTES:
            return "''"
        return repr(str(field.default_value) if field.cpp_type in _INT64_CPPTYPES else field.default_value)

    def _source(self, name: str, desc: descriptor.Descriptor) -> str:
        reads, sets, defaults = [], [], []
        for i, field in enumerate(sorted(desc.fields, key=lambda f: f.number)):
            var, key = f"v{i}", repr(field.name)
            attr = f"getattr(m, {key})" if keyword.iskeyword(field.name) else f"m.{field.name}"
            if field.is_repeated:
                item = self._value(field, "x")
                reads.append(f"{var} = {attr}")
                value = f"list({var})" if item == "x" else f"[{item} for x in {var}]"
                sets.append(f"if {var}: d[{key}] = {value}")
            elif field.has_presence:
                reads.append(f"{var} = {attr} if m.HasField({key}) else None")
                sets.append(f"if {var} is not None: d[{key}] = {self._value(field, var)}")
            else:
                reads.append(f"{var} = {attr}")
                sets.append(f"if {var}: d[{key}] = {self._value(field, var)}")
            if self._always and not field.has_presence:
                defaults.append((field.index, f"if not {var}: d[{key}] = {self._default(field)}"))
        body = [*reads, "d = {}", *sets, *(line for _, line in sorted(defaults)), "return d"]
        return f"def {name}(m):\n" + "".join(f"    {line}\n" for line in body)


_RESPONSES = JsonRenderer(always_print_fields_with_no_presence=True)
