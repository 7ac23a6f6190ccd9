# mypy: ignore-errors
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class NewMeshCertRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NewMeshCertResponse(_message.Message):
    __slots__ = ("MeshCACert", "CertChain", "RootCACert", "WorkloadSecret")
    MESHCACERT_FIELD_NUMBER: _ClassVar[int]
    CERTCHAIN_FIELD_NUMBER: _ClassVar[int]
    ROOTCACERT_FIELD_NUMBER: _ClassVar[int]
    WORKLOADSECRET_FIELD_NUMBER: _ClassVar[int]
    MeshCACert: bytes
    CertChain: bytes
    RootCACert: bytes
    WorkloadSecret: bytes
    def __init__(self, MeshCACert: _Optional[bytes] = ..., CertChain: _Optional[bytes] = ..., RootCACert: _Optional[bytes] = ..., WorkloadSecret: _Optional[bytes] = ...) -> None: ...

class RecoverRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RecoverResponse(_message.Message):
    __slots__ = ("Seed", "Salt", "MeshCAKey", "LatestManifest")
    SEED_FIELD_NUMBER: _ClassVar[int]
    SALT_FIELD_NUMBER: _ClassVar[int]
    MESHCAKEY_FIELD_NUMBER: _ClassVar[int]
    LATESTMANIFEST_FIELD_NUMBER: _ClassVar[int]
    Seed: bytes
    Salt: bytes
    MeshCAKey: bytes
    LatestManifest: bytes
    def __init__(self, Seed: _Optional[bytes] = ..., Salt: _Optional[bytes] = ..., MeshCAKey: _Optional[bytes] = ..., LatestManifest: _Optional[bytes] = ...) -> None: ...
