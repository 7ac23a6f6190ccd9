"""Regenerate the shim's protobuf modules: ``python -m runtime.protocols.generate [OUT_ROOT]``
(checked by tests/runtime/test_runtime_units.py)."""

from common.protoc import ProtoSet

PROTOS = ProtoSet.named("runtime/protocols", ("mount", "task", "shim", "events", "runtimeoptions", "cgroups"))
generate = PROTOS.generate

if __name__ == "__main__":
    raise SystemExit(PROTOS.main())
