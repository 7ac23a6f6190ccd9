"""Protobuf <-> policy JSON: kata's serde conventions, checked against an independent canonicaliser."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kata_testdata import KATA_POLICY, case_dirs, load_cases

from guest.policy import PolicyInputError, PolicyInternalError
from guest.policy.input import (
    copy_file_input,
    copy_file_request_from_input,
    from_policy_json,
    to_policy_json,
)
from guest.protocols import agent_pb2, oci_pb2, types_pb2

SCHEMA: dict[str, list[list[str]]] = json.loads((KATA_POLICY / "derived" / "proto_schema.json").read_text())
DEFAULTS = {"string": "", "bool": False, "bytes": [], "enum": 0, "scalar": 0}


def canonical(type_name: str, obj: dict[str, Any]) -> dict[str, Any]:
    """serde(default) re-serialisation written from proto_schema.json, independent of guest.policy.input."""
    out: dict[str, Any] = {}
    for name, kind, typ, label in SCHEMA[type_name]:
        key = "type_" if name == "type" else name
        if label.startswith("oneof:"):
            oneof = label.split(":", 1)[1]
            out[oneof] = obj.get(oneof)
            continue
        value = obj.get(key)
        if label == "repeated":
            value = value or []
            out[key] = [canonical(typ.split(".")[-1], v) for v in value] if kind == "message" else list(value)
        elif kind == "map":
            out[key] = dict(value or {})
        elif kind == "message":
            out[key] = None if value is None else canonical(typ.split(".")[-1], value)
        elif label == "optional":
            out[key] = value
        else:
            out[key] = DEFAULTS[kind] if value is None else value
    return out


MESSAGES = {
    "CreateContainerRequest": agent_pb2.CreateContainerRequest,
    "CreateSandboxRequest": agent_pb2.CreateSandboxRequest,
    "ExecProcessRequest": agent_pb2.ExecProcessRequest,
    "RemoveContainerRequest": agent_pb2.RemoveContainerRequest,
    "UpdateInterfaceRequest": agent_pb2.UpdateInterfaceRequest,
    "UpdateRoutesRequest": agent_pb2.UpdateRoutesRequest,
    "AddARPNeighborsRequest": agent_pb2.AddARPNeighborsRequest,
}
ALL_CASES = [(d, i, c) for d in case_dirs() for i, c in enumerate(load_cases(d))]


@pytest.mark.parametrize(("directory", "index", "case"), ALL_CASES, ids=[f"{d}#{i}" for d, i, _ in ALL_CASES])
def test_round_trip_equals_canonical_form(directory: str, index: int, case: dict[str, Any]) -> None:
    kind, request = case["kind"], case["request"]
    if kind == "CopyFileRequest":
        msg = copy_file_request_from_input(request)
        wire = agent_pb2.CopyFileRequest.FromString(msg.SerializeToString())
        projected = copy_file_input(wire)
        assert projected["file_type"] == request["file_type"]
        assert projected["path"] == request["path"]
        assert projected["symlink_target"] == request.get("symlink_target")
        return
    msg = from_policy_json(MESSAGES[kind], request)
    wire = MESSAGES[kind].FromString(msg.SerializeToString())
    got = to_policy_json(wire)
    assert got == canonical(kind, request)
    # JSON -> protobuf -> JSON is a fixed point
    assert to_policy_json(from_policy_json(MESSAGES[kind], got)) == got


def test_serde_conventions() -> None:
    iface = types_pb2.Interface(type="veth", raw_flags=128)
    iface.IPAddresses.add(family=types_pb2.v6, address="::1")
    assert to_policy_json(iface) == {
        "device": "", "name": "", "IPAddresses": [{"family": 1, "address": "::1", "mask": ""}], "mtu": 0,
        "hwAddr": "", "devicePath": "", "type_": "veth", "raw_flags": 128,
    }
    sys = oci_pb2.LinuxSyscall(Names=["read"], errnoret=1)
    assert to_policy_json(sys)["ErrnoRet"] == {"Errnoret": 1}
    assert to_policy_json(oci_pb2.LinuxSyscall())["ErrnoRet"] is None
    memcg = agent_pb2.MemAgentMemcgConfig(swap=False)
    j = to_policy_json(memcg)
    assert j["swap"] is False and j["disabled"] is None
    big = agent_pb2.MemHotplugByProbeRequest(memHotplugProbeAddr=[2**64 - 1])
    assert to_policy_json(big) == {"memHotplugProbeAddr": [18446744073709551615]}
    data = agent_pb2.WriteStreamRequest(data=b"\x00\xff")
    assert to_policy_json(data)["data"] == [0, 255]


def test_present_empty_submessage_is_object_not_null() -> None:
    req = agent_pb2.ExecProcessRequest()
    req.process.Capabilities.SetInParent()
    j = to_policy_json(agent_pb2.ExecProcessRequest.FromString(req.SerializeToString()))
    assert j["process"]["Capabilities"] == {
        "Bounding": [], "Effective": [], "Inheritable": [], "Permitted": [], "Ambient": []
    }
    assert j["string_user"] is None


def test_unknown_enum_value_kept() -> None:
    # field 1 (family) = 7, field 2 (address) = "x"
    ip = types_pb2.IPAddress.FromString(b"\x08\x07\x12\x01x")
    assert to_policy_json(ip)["family"] == 7


def test_unknown_fields_dropped_from_input_and_reencoding() -> None:
    raw = agent_pb2.StartContainerRequest(container_id="c").SerializeToString() + b"\xa0\x06\x01"  # field 100
    msg = agent_pb2.StartContainerRequest.FromString(raw)
    assert to_policy_json(msg) == {"container_id": "c"}
    msg.DiscardUnknownFields()
    assert msg.SerializeToString() == agent_pb2.StartContainerRequest(container_id="c").SerializeToString()


def test_map_last_duplicate_key_wins() -> None:
    entry1 = b"\x0a\x01k\x12\x01a"
    entry2 = b"\x0a\x01k\x12\x01b"
    raw = b"\x3a" + bytes([len(entry1)]) + entry1 + b"\x3a" + bytes([len(entry2)]) + entry2
    assert to_policy_json(oci_pb2.Spec.FromString(raw))["Annotations"] == {"k": "b"}


@pytest.mark.parametrize(
    ("obj", "where"),
    [
        ({"container_id": 5}, "container_id"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": 2**32}, "timeout"),
        ({"timeout": True}, "timeout"),
    ],
)
def test_json_type_errors(obj: dict[str, Any], where: str) -> None:
    with pytest.raises(PolicyInputError) as err:
        from_policy_json(agent_pb2.RemoveContainerRequest, obj)
    assert err.value.path == where


def test_copy_file_projection_table() -> None:
    table = [
        (0o100644, b"", "Regular", None),
        (0o040755, b"", "Directory", None),
        (0o120777, b"target", "Symlink", "target"),
        (0o060600, b"", "Unknown", None),
        (0o644, b"x", "Unknown", None),
    ]
    for mode, data, file_type, target in table:
        j = copy_file_input(agent_pb2.CopyFileRequest(path="/p", file_mode=mode, data=data, file_size=9))
        assert (j["file_type"], j["symlink_target"]) == (file_type, target)
        assert "data" not in j and j["file_size"] == 9 and j["file_mode"] == mode
    with pytest.raises(PolicyInternalError, match="invalid symlink content"):
        copy_file_input(agent_pb2.CopyFileRequest(file_mode=0o120777, data=b"\xff"))


_names = st.text(max_size=8)


@settings(max_examples=150, deadline=None)
@given(st.builds(
    dict,
    container_id=_names,
    exec_id=_names,
    process=st.one_of(st.none(), st.builds(
        dict, Args=st.lists(_names, max_size=3), Env=st.lists(_names, max_size=3),
        User=st.one_of(st.none(), st.builds(dict, UID=st.integers(0, 2**32 - 1),
                                            AdditionalGids=st.lists(st.integers(0, 2**32 - 1), max_size=3))),
    )),
    stdin_port=st.integers(0, 2**32 - 1),
))
def test_json_protobuf_json_property(obj: dict[str, Any]) -> None:
    msg = from_policy_json(agent_pb2.ExecProcessRequest, obj)
    j = to_policy_json(agent_pb2.ExecProcessRequest.FromString(msg.SerializeToString()))
    assert j == canonical("ExecProcessRequest", obj)
    assert to_policy_json(from_policy_json(agent_pb2.ExecProcessRequest, j)) == j
