"""Protobuf messages as JSON, printed byte for byte as tensorflow_model_server's REST API prints
them.

TF Serving prints model status and metadata with protobuf's C++ `MessageToJsonString` and
`add_whitespace` + `always_print_primitive_fields` (http_rest_api_util.cc, ToJsonString), and
metadata also with `preserve_proto_field_names`, its model spec and signature map printed apart
and joined by hand. Python's `json_format` differs in ways clients notice: it leaves out empty
repeated and map fields (`"dim": []`, `"defaults": {}`) and indents otherwise. What the C++
printer does, and this module with it:

- every field without presence is printed (scalars at their default, `[]`, `{}`); a message
  field only when set; fields in declaration order, then the set member of each oneof (that is
  how `TensorInfo` prints `dtype`, `tensor_shape`, then `name`);
- 64-bit integers as strings, enums by name, wrapper messages as their value;
- one space of indentation per level, `"key": value`, a newline after the outermost value.
Map entries are printed in key order (C++ leaves it to the map's iteration order).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from google.protobuf import descriptor
from google.protobuf.message import Message

_FD = descriptor.FieldDescriptor
_STRING_INTEGERS = {_FD.TYPE_INT64, _FD.TYPE_UINT64, _FD.TYPE_SINT64, _FD.TYPE_FIXED64}
_STRING_INTEGERS |= {_FD.TYPE_SFIXED64}
_WRAPPERS = {
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
}


def message_to_json(message: Message, *, proto_field_names: bool) -> str:
    """`message` as TF Serving's REST handler prints it; `proto_field_names` is the printer's
    `preserve_proto_field_names` (metadata: true; status: false, where json_name decides)."""
    return _write(_message_value(message, proto_field_names), 0) + "\n"


def model_metadata_json(model_spec: Message, signature_def_map: Message) -> str:
    """GetModelMetadata's REST body, assembled as http_rest_api_util.cc's ToJsonString does."""
    spec = message_to_json(model_spec, proto_field_names=True)
    signatures = message_to_json(signature_def_map, proto_field_names=True)
    return f'{{\n"model_spec":{spec},\n"metadata": {{"signature_def": {signatures}}}\n}}\n'


class _Object(list[tuple[str, Any]]):
    """Members in print order (a dict would do, but the order is the point)."""


def _message_value(message: Message, proto_field_names: bool) -> Any:
    desc = message.DESCRIPTOR
    if desc.full_name in _WRAPPERS:
        return _scalar(desc.fields_by_name["value"], message.value)
    members = _Object()
    oneof_members = []
    for field in desc.fields:
        key = field.name if proto_field_names else field.json_name
        if field.containing_oneof is not None:
            if message.HasField(field.name):
                oneof_members.append((field.number, key, field))
            continue
        if _is_map(field):
            members.append(
                (key, _map_value(field, getattr(message, field.name), proto_field_names))
            )
        elif _is_repeated(field):
            values = getattr(message, field.name)
            members.append((key, [_field_value(field, v, proto_field_names) for v in values]))
        elif field.type == _FD.TYPE_MESSAGE:
            if message.HasField(field.name):
                members.append(
                    (key, _message_value(getattr(message, field.name), proto_field_names))
                )
        else:
            members.append((key, _scalar(field, getattr(message, field.name))))
    for _, key, field in sorted(oneof_members, key=lambda item: item[0]):
        members.append((key, _field_value(field, getattr(message, field.name), proto_field_names)))
    return members


def _is_repeated(field: descriptor.FieldDescriptor) -> bool:
    flag = getattr(field, "is_repeated", None)  # protobuf >= 6 has no `label`
    if flag is not None:
        return bool(flag)
    return bool(field.label == _FD.LABEL_REPEATED)


def _is_map(field: descriptor.FieldDescriptor) -> bool:
    return (
        field.type == _FD.TYPE_MESSAGE
        and field.message_type.has_options
        and field.message_type.GetOptions().map_entry
    )


def _map_value(field: descriptor.FieldDescriptor, value: Any, proto_field_names: bool) -> _Object:
    value_field = field.message_type.fields_by_name["value"]
    return _Object(
        (str(key), _field_value(value_field, value[key], proto_field_names))
        for key in sorted(value)
    )


def _field_value(field: descriptor.FieldDescriptor, value: Any, proto_field_names: bool) -> Any:
    if field.type == _FD.TYPE_MESSAGE:
        return _message_value(value, proto_field_names)
    return _scalar(field, value)


def _scalar(field: descriptor.FieldDescriptor, value: Any) -> Any:
    if field.type == _FD.TYPE_ENUM:
        named = field.enum_type.values_by_number.get(value)
        return named.name if named is not None else value
    if field.type in _STRING_INTEGERS:
        return str(value)
    if field.type == _FD.TYPE_BYTES:
        return base64.b64encode(value).decode("ascii")
    return value


def _write(value: Any, level: int) -> str:
    if isinstance(value, _Object):
        if not value:
            return "{}"
        inner = " " * (level + 1)
        members = ",\n".join(f"{inner}{json.dumps(k)}: {_write(v, level + 1)}" for k, v in value)
        return "{\n" + members + "\n" + " " * level + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        inner = " " * (level + 1)
        items = ",\n".join(f"{inner}{_write(item, level + 1)}" for item in value)
        return "[\n" + items + "\n" + " " * level + "]"
    return json.dumps(value, ensure_ascii=False)
