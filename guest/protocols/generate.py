"""Regenerate the agent API modules: ``python -m guest.protocols.generate [OUT_ROOT]``.

The .proto files import each other as ``guest/protocols/<name>.proto``, so the generated modules import
each other as ``guest.protocols.<name>_pb2`` (checked by tests/guest/test_agent_protocols.py)."""

from common.protoc import ProtoSet

PROTOS = ProtoSet.named("guest/protocols", ("types", "oci", "csi", "health", "agent"))
generate = PROTOS.generate

if __name__ == "__main__":
    raise SystemExit(PROTOS.main())
