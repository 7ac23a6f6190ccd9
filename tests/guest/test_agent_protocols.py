"""The compiled agent API matches kata's field table exactly, and the generated code is in sync."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from kata_testdata import FIELDS

from guest.protocols import agent_pb2, csi_pb2, health_pb2, oci_pb2, types_pb2
from guest.protocols.generate import generate

MODULES = (agent_pb2, oci_pb2, types_pb2, csi_pb2, health_pb2)
SCALAR_NAMES = {
    FieldDescriptor.TYPE_STRING: "string", FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_INT32: "int32", FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_UINT32: "uint32", FieldDescriptor.TYPE_UINT64: "uint64",
}


def _table() -> dict[str, Any]:
    table: dict[str, Any] = json.loads(FIELDS.read_text())
    return table


def _descriptor(full_name: str) -> Descriptor:
    for mod in MODULES:
        pool = mod.DESCRIPTOR.pool
        try:
            return pool.FindMessageTypeByName(full_name)
        except KeyError:
            continue
    raise KeyError(full_name)


def _short(full: str, package: str) -> str:
    """The table names types in the same package without prefix (nested enums by their own name)."""
    if full.startswith(package + "."):
        rest = full[len(package) + 1 :]
        return rest.split(".")[-1]
    return full


def _type_of(field: FieldDescriptor, package: str) -> str:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key, value = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
        return f"map<{_type_of(key, package)},{_type_of(value, package)}>"
    if field.message_type is not None:
        return _short(field.message_type.full_name, package)
    if field.enum_type is not None:
        return _short(field.enum_type.full_name, package)
    return SCALAR_NAMES[field.type]


@pytest.mark.parametrize("full_name", sorted(_table()["messages"]))
def test_message_fields_match_table(full_name: str) -> None:
    desc = _descriptor(full_name)
    package = full_name.split(".")[0]
    got = []
    for f in desc.fields:
        is_map = f.message_type is not None and f.message_type.GetOptions().map_entry
        if f.is_repeated and not is_map:
            label = "repeated"
        elif f.has_presence and f.containing_oneof is not None and f.containing_oneof.name.startswith("_"):
            label = "optional"
        else:
            label = "singular"
        row: dict[str, Any] = {
            "label": label, "name": f.name, "number": f.number, "type": _type_of(f, package),
        }
        if f.containing_oneof is not None and not f.containing_oneof.name.startswith("_"):
            row["oneof"] = f.containing_oneof.name
        got.append(row)
    assert got == _table()["messages"][full_name]


def test_enums_match_table() -> None:
    for full_name, values in _table()["enums"].items():
        for mod in MODULES:
            try:
                enum = mod.DESCRIPTOR.pool.FindEnumTypeByName(full_name)
                break
            except KeyError:
                continue
        else:
            raise AssertionError(f"enum {full_name} missing")
        assert {v.name: v.number for v in enum.values} == values


def test_services_match_table() -> None:
    for service_name, rpcs in _table()["services"].items():
        service = agent_pb2.DESCRIPTOR.pool.FindServiceByName(service_name)
        got = [
            {
                "request": _short(m.input_type.full_name, "grpc"),
                "response": _short(m.output_type.full_name, "grpc"),
                "rpc": m.name,
            }
            for m in service.methods
        ]
        want = [{**r, "response": r["response"].removeprefix("csi.")} for r in rpcs]
        assert got == want


def test_generated_code_in_sync(tmp_path: Path) -> None:
    written = generate(tmp_path)
    assert written, "protoc produced nothing"
    committed = Path(agent_pb2.__file__).parent
    for path in written:
        assert (committed / path.name).read_bytes() == path.read_bytes(), f"{path.name} is stale: regenerate"
