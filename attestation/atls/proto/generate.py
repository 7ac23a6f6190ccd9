"""Regenerate the evidence protobuf modules: ``python -m attestation.atls.proto.generate [OUT_ROOT]``
(checked by tests/atls/test_proto_sync.py)."""

from common.protoc import ProtoSet

PROTOS = ProtoSet(("attestation/atls/proto/sevsnp.proto", "attestation/atls/proto/tdx.proto"))
generate = PROTOS.generate

if __name__ == "__main__":
    raise SystemExit(PROTOS.main())
