"""Protobuf responses as JSON, at a third of `json_format.MessageToDict`'s CPU, with the same output.

MessageToDict walks the descriptor of every message it meets, field by field, twice (set fields,
then defaults): about 1.4 ms of the edge's CPU for a history page of 50, the largest single cost of
serving one. `JsonRenderer` writes one plain Python function per message type, once (source built
from the descriptor only, as dataclasses and attrs build theirs), that reads each field once. Types
it does not compile go to MessageToDict itself, and tests/test_history_render.py holds the two to the
same bytes for every REST response type.
"""

from __future__ import annotations

import binascii
import keyword
from collections.abc import Callable
from typing import Any, cast

import orjson
from google.protobuf import descriptor, descriptor_pool, json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from chatmesh.timestamps import rfc3339

_C = descriptor.FieldDescriptor
_INT64_CPPTYPES = frozenset({_C.CPPTYPE_INT64, _C.CPPTYPE_UINT64})
_FLOAT_CPPTYPES = frozenset({_C.CPPTYPE_FLOAT, _C.CPPTYPE_DOUBLE})


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
        desc = cast(descriptor.Descriptor, message.DESCRIPTOR)  # the stubs add upb's twin type
        function = self._functions.get(desc) or self._compile(desc)
        return function(message)

    def render_json(self, message: Message) -> bytes:
        """The bytes Starlette's JSONResponse writes for `render(message)` (compact, UTF-8, unescaped)."""
        return bytes(orjson.dumps(self.render(message)))

    def _fallback(self, message: Message) -> Any:
        return json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=self._always
        )

    def _compilable(self, desc: descriptor.Descriptor) -> bool:
        if desc.full_name.startswith("google.protobuf.") or desc.extension_ranges:
            return False
        for field in desc.fields:
            if field.cpp_type in _FLOAT_CPPTYPES or (
                field.message_type is not None and field.message_type.GetOptions().map_entry
            ):
                return False
            if field.enum_type is not None and (
                field.enum_type.is_closed
                or self._custom_enum_names
                or field.enum_type.full_name == "google.protobuf.NullValue"
            ):
                return False
        return True

    def _compile(self, desc: descriptor.Descriptor) -> Callable[[Any], Any]:
        """The function for `desc`, and for the types it nests; the name is taken first (recursive types)."""
        name = self._names[desc] = f"_r{len(self._names)}"
        function: Callable[[Any], Any]
        if desc.full_name == Timestamp.DESCRIPTOR.full_name:
            function = rfc3339  # Timestamp.ToJsonString at half its cost
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
