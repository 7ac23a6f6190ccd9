# mypy: disable-error-code="type-arg"
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class EchoRequest(_message.Message):
    __slots__ = ("id", "data", "sleep_ms", "reply_size")
    ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SLEEP_MS_FIELD_NUMBER: _ClassVar[int]
    REPLY_SIZE_FIELD_NUMBER: _ClassVar[int]
    id: str
    data: bytes
    sleep_ms: int
    reply_size: int
    def __init__(self, id: _Optional[str] = ..., data: _Optional[bytes] = ..., sleep_ms: _Optional[int] = ..., reply_size: _Optional[int] = ...) -> None: ...

class EchoResponse(_message.Message):
    __slots__ = ("id", "data", "seq", "metadata", "timeout_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    id: str
    data: bytes
    seq: int
    metadata: _containers.RepeatedScalarFieldContainer[str]
    timeout_ms: int
    def __init__(self, id: _Optional[str] = ..., data: _Optional[bytes] = ..., seq: _Optional[int] = ..., metadata: _Optional[_Iterable[str]] = ..., timeout_ms: _Optional[int] = ...) -> None: ...
