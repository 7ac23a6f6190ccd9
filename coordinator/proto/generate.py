"""Regenerate the MeshAPI/UserAPI modules: ``python -m coordinator.proto.generate [OUT_ROOT]``
(checked by tests/coordinator/test_coord_proto_sync.py)."""

from common.protoc import ProtoSet

PROTOS = ProtoSet(("coordinator/proto/meshapi.proto", "coordinator/proto/userapi.proto"))
generate = PROTOS.generate

if __name__ == "__main__":
    raise SystemExit(PROTOS.main())
