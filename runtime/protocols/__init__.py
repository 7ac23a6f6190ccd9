"""Protobuf messages of containerd's shim v2 API (task service, events, runtime options)."""
