"""Agent API messages <-> the JSON document kata-agent hands to Rego as ``input``.

kata-agent's generated Rust types serialise with serde before the policy sees them, so the policy sees that
shape, so we derive it from the message descriptors, never from per-message code:

* every field is present, proto3 defaults included (``""``, ``0``, ``false``, ``[]``, ``{}``);
* a singular sub-message is an object when present on the wire and ``null`` when absent;
* proto3 ``optional`` scalars are the value or ``null``;
* enums are integers (unknown numbers kept), bytes are arrays of 0-255 integers;
* 64-bit integers stay exact (Python ints; regorus keeps them exact too);
* map fields are objects; the JSON key is the proto name, except ``type`` -> ``type_``;
* a oneof is one key named after the oneof holding ``null`` or ``{"<Variant>": value}``, where the
  variant is the member's name in UpperCamelCase (``ErrnoRet: {"Errnoret": 1}``).

:func:`from_policy_json` is the inverse used by tools and tests: missing keys take their defaults and
unknown keys are dropped, as kata's test harness does when it deserialises a partial request.

CopyFile is special: Rego sees :func:`copy_file_input` (kata's ``PolicyCopyFileRequest``), not the
message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from guest.policy.errors import PolicyInputError, PolicyInternalError
from guest.protocols import agent_pb2

__all__ = [
    "canonical_copy_file_input",
    "copy_file_input",
    "copy_file_request_from_input",
    "from_policy_json",
    "json_key",
    "to_policy_json",
]

M = TypeVar("M", bound=Message)

_T = FieldDescriptor
_INT_TYPES = frozenset({_T.TYPE_INT32, _T.TYPE_INT64, _T.TYPE_UINT32, _T.TYPE_UINT64, _T.TYPE_SINT32,
                        _T.TYPE_SINT64, _T.TYPE_FIXED32, _T.TYPE_FIXED64, _T.TYPE_SFIXED32, _T.TYPE_SFIXED64})
_RANGES = {
    _T.TYPE_INT32: (-(2**31), 2**31 - 1), _T.TYPE_SINT32: (-(2**31), 2**31 - 1),
    _T.TYPE_SFIXED32: (-(2**31), 2**31 - 1), _T.TYPE_INT64: (-(2**63), 2**63 - 1),
    _T.TYPE_SINT64: (-(2**63), 2**63 - 1), _T.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    _T.TYPE_UINT32: (0, 2**32 - 1), _T.TYPE_FIXED32: (0, 2**32 - 1),
    _T.TYPE_UINT64: (0, 2**64 - 1), _T.TYPE_FIXED64: (0, 2**64 - 1),
}
_RUST_KEYWORDS = frozenset({"type"})


def json_key(field: FieldDescriptor) -> str:
    """The serde key rust-protobuf gives a field (proto name; Rust keywords get a trailing ``_``)."""
    return field.name + "_" if field.name in _RUST_KEYWORDS else field.name


def _variant_name(field_name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in field_name.split("_"))


def _is_map(field: FieldDescriptor) -> bool:
    mt = field.message_type
    return mt is not None and bool(mt.GetOptions().map_entry)


def _map_value(field: FieldDescriptor) -> FieldDescriptor:
    entry = field.message_type
    assert entry is not None
    value: FieldDescriptor = entry.fields_by_name["value"]
    return value


def _is_real_oneof(field: FieldDescriptor) -> bool:
    oneof = field.containing_oneof
    # proto3 `optional` fields live in a synthetic oneof named "_<field>"; those are not serde enums.
    return oneof is not None and not oneof.name.startswith("_")


class _Plan:
    """Per-message conversion plan, computed once per descriptor (the hot path is CreateContainer)."""

    __slots__ = ("fields", "oneofs")

    def __init__(self, desc: Descriptor) -> None:
        # (json key, attribute name, kind, descriptor); kind: scalar/bytes/message/optional/
        # repeated_scalar/repeated_bytes/repeated_message/map_scalar/map_message
        self.fields: list[tuple[str, str, str, FieldDescriptor]] = []
        self.oneofs: dict[str, list[tuple[str, FieldDescriptor]]] = {}
        for f in desc.fields:
            if _is_real_oneof(f):
                assert f.containing_oneof is not None
                self.oneofs.setdefault(f.containing_oneof.name, []).append((_variant_name(f.name), f))
                continue
            if _is_map(f):
                value = _map_value(f)
                kind = "map_message" if value.message_type is not None else "map_scalar"
            elif f.is_repeated:
                if f.message_type is not None:
                    kind = "repeated_message"
                elif f.type == _T.TYPE_BYTES:
                    kind = "repeated_bytes"
                else:
                    kind = "repeated_scalar"
            elif f.message_type is not None:
                kind = "message"
            elif f.has_presence:
                kind = "optional"
            elif f.type == _T.TYPE_BYTES:
                kind = "bytes"
            else:
                kind = "scalar"
            self.fields.append((json_key(f), f.name, kind, f))


_PLANS: dict[str, _Plan] = {}


def _plan(desc: Any) -> _Plan:  # upb and pure-Python Descriptor types differ
    plan = _PLANS.get(desc.full_name)
    if plan is None:
        plan = _PLANS[desc.full_name] = _Plan(desc)
    return plan


def _scalar_out(value: Any, field: FieldDescriptor) -> Any:
    if field.type == _T.TYPE_BYTES:
        return list(value)
    return value


def to_policy_json(msg: Message) -> dict[str, Any]:
    """The serde JSON of ``msg`` as kata-agent builds it for the policy (see module docstring)."""
    plan = _plan(msg.DESCRIPTOR)
    out: dict[str, Any] = {}
    for key, attr, kind, field in plan.fields:
        value = getattr(msg, attr)
        if kind == "scalar":
            out[key] = value
        elif kind == "message":
            out[key] = to_policy_json(value) if msg.HasField(attr) else None
        elif kind == "repeated_scalar":
            out[key] = list(value)
        elif kind == "repeated_message":
            out[key] = [to_policy_json(v) for v in value]
        elif kind == "map_scalar":
            out[key] = dict(value)
        elif kind == "map_message":
            out[key] = {k: to_policy_json(v) for k, v in value.items()}
        elif kind == "optional":
            out[key] = _scalar_out(value, field) if msg.HasField(attr) else None
        elif kind == "bytes":
            out[key] = list(value)
        else:  # repeated_bytes
            out[key] = [list(v) for v in value]
    for oneof_name, members in plan.oneofs.items():
        chosen = msg.WhichOneof(oneof_name)
        out[oneof_name] = None
        for variant, field in members:
            if field.name == chosen:
                value = getattr(msg, field.name)
                if field.message_type is not None:
                    value = to_policy_json(value)
                out[oneof_name] = {variant: _scalar_out(value, field)}
    return out


# -- JSON -> message --------------------------------------------------------------------------------


def _scalar_in(value: Any, field: FieldDescriptor, path: str) -> Any:
    t = field.type
    if t == _T.TYPE_STRING:
        if not isinstance(value, str):
            raise PolicyInputError(path, "string", value)
        return value
    if t == _T.TYPE_BOOL:
        if not isinstance(value, bool):
            raise PolicyInputError(path, "bool", value)
        return value
    if t == _T.TYPE_BYTES:
        if isinstance(value, list) and all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255
                                           for b in value):
            return bytes(value)
        raise PolicyInputError(path, "array of 0-255 integers", value)
    if t == _T.TYPE_ENUM:
        if not isinstance(value, int) or isinstance(value, bool) or not -(2**31) <= value < 2**31:
            raise PolicyInputError(path, "enum number", value)
        return value
    if t in _INT_TYPES:
        lo, hi = _RANGES[t]
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise PolicyInputError(path, f"integer in [{lo}, {hi}]", value)
        return value
    if t in (_T.TYPE_DOUBLE, _T.TYPE_FLOAT):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise PolicyInputError(path, "number", value)
        return float(value)
    raise PolicyInputError(path, "a supported field type", value)  # pragma: no cover - not in the API


def _fill(msg: Message, obj: Any, path: str) -> None:
    if not isinstance(obj, Mapping):
        raise PolicyInputError(path, "object", obj)
    plan = _plan(msg.DESCRIPTOR)
    for key, attr, kind, field in plan.fields:
        if key not in obj or obj[key] is None:
            continue  # serde(default): missing -> default; null sub-message -> absent
        value = obj[key]
        where = f"{path}.{key}" if path else key
        if kind in ("scalar", "bytes", "optional"):
            setattr(msg, attr, _scalar_in(value, field, where))
        elif kind == "message":
            sub = getattr(msg, attr)
            sub.SetInParent()  # present even when all its fields are defaults
            _fill(sub, value, where)
        elif kind in ("repeated_scalar", "repeated_bytes"):
            if not isinstance(value, list):
                raise PolicyInputError(where, "array", value)
            getattr(msg, attr).extend(_scalar_in(v, field, f"{where}[{i}]") for i, v in enumerate(value))
        elif kind == "repeated_message":
            if not isinstance(value, list):
                raise PolicyInputError(where, "array", value)
            container = getattr(msg, attr)
            for i, item in enumerate(value):
                _fill(container.add(), item, f"{where}[{i}]")
        else:  # maps
            if not isinstance(value, Mapping):
                raise PolicyInputError(where, "object", value)
            container = getattr(msg, attr)
            value_field = _map_value(field)
            for k, v in value.items():
                if kind == "map_scalar":
                    container[k] = _scalar_in(v, value_field, f"{where}[{k!r}]")
                else:
                    _fill(container[k], v, f"{where}[{k!r}]")
    for oneof_name, members in plan.oneofs.items():
        value = obj.get(oneof_name)
        if value is None:
            continue
        where = f"{path}.{oneof_name}" if path else oneof_name
        if not isinstance(value, Mapping) or len(value) != 1:
            raise PolicyInputError(where, "object with exactly one variant", value)
        (variant, inner), = value.items()
        for name, field in members:
            if name == variant:
                if field.message_type is not None:
                    sub = getattr(msg, field.name)
                    sub.SetInParent()
                    _fill(sub, inner, f"{where}.{variant}")
                else:
                    setattr(msg, field.name, _scalar_in(inner, field, f"{where}.{variant}"))
                break
        else:
            raise PolicyInputError(where, f"one of {[n for n, _ in members]}", variant)


def from_policy_json(message_type: type[M], obj: Any) -> M:
    """Build a message from (possibly partial) policy JSON; unknown keys are dropped."""
    msg = message_type()
    _fill(msg, obj, "")
    return msg


# -- CopyFile -------------------------------------------------------------------------------------

S_IFMT = 0o170000
_FILE_TYPES = {0o100000: "Regular", 0o040000: "Directory", 0o120000: "Symlink"}
_FILE_TYPE_BITS = {name: bits for bits, name in _FILE_TYPES.items()}


def copy_file_input(req: agent_pb2.CopyFileRequest) -> dict[str, Any]:
    """kata-agent's PolicyCopyFileRequest: the request without ``data``, plus file type and link target.

    Raises PolicyInternalError (INTERNAL, before any evaluation) for a symlink target that is not UTF-8.
    """
    file_type = _FILE_TYPES.get(req.file_mode & S_IFMT, "Unknown")
    target: str | None = None
    if file_type == "Symlink":
        try:
            target = req.data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PolicyInternalError(
                "CopyFileRequest",
                f"parsing CopyFileRequest for policy\n\nCaused by:\n    invalid symlink content: {exc}",
            ) from exc
    return {
        "path": req.path,
        "file_type": file_type,
        "symlink_target": target,
        "file_size": req.file_size,
        "file_mode": req.file_mode,
        "dir_mode": req.dir_mode,
        "uid": req.uid,
        "gid": req.gid,
        "offset": req.offset,
    }


def copy_file_request_from_input(obj: Mapping[str, Any]) -> agent_pb2.CopyFileRequest:
    """A CopyFileRequest whose projection has ``obj``'s file type and link target (tests and tools).

    The type bits are OR-ed into ``file_mode``; the symlink target becomes ``data``.
    """
    fields = {k: v for k, v in obj.items() if k not in ("file_type", "symlink_target", "data")}
    req = from_policy_json(agent_pb2.CopyFileRequest, fields)
    file_type = obj.get("file_type", "Unknown")
    if file_type not in _FILE_TYPE_BITS and file_type != "Unknown":
        raise PolicyInputError("file_type", "Regular, Directory, Symlink or Unknown", file_type)
    req.file_mode = (req.file_mode & ~S_IFMT) | _FILE_TYPE_BITS.get(file_type, 0)
    target = obj.get("symlink_target")
    if target is not None:
        if not isinstance(target, str):
            raise PolicyInputError("symlink_target", "string", target)
        req.data = target.encode("utf-8")
    return req


_COPY_FILE_DEFAULTS: dict[str, Any] = {
    "path": "", "file_type": "Unknown", "symlink_target": None, "file_size": 0, "file_mode": 0,
    "dir_mode": 0, "uid": 0, "gid": 0, "offset": 0,
}


def canonical_copy_file_input(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A partial PolicyCopyFileRequest with defaults filled and unknown keys dropped (kata's harness)."""
    if not isinstance(obj, Mapping):
        raise PolicyInputError("", "object", obj)
    out = {key: obj.get(key, default) for key, default in _COPY_FILE_DEFAULTS.items()}
    for key in out:
        if out[key] is None and key != "symlink_target":
            out[key] = _COPY_FILE_DEFAULTS[key]
    return out
