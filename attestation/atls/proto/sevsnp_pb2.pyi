# mypy: ignore-errors
from google.protobuf import wrappers_pb2 as _wrappers_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Report(_message.Message):
    __slots__ = ("version", "guest_svn", "policy", "family_id", "image_id", "vmpl", "signature_algo", "current_tcb", "platform_info", "signer_info", "report_data", "measurement", "host_data", "id_key_digest", "author_key_digest", "report_id", "report_id_ma", "reported_tcb", "chip_id", "committed_tcb", "current_build", "current_minor", "current_major", "committed_build", "committed_minor", "committed_major", "launch_tcb", "signature", "cpuid1eax_fms", "launch_mit_vector", "current_mit_vector")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    GUEST_SVN_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    FAMILY_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    VMPL_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_ALGO_FIELD_NUMBER: _ClassVar[int]
    CURRENT_TCB_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_INFO_FIELD_NUMBER: _ClassVar[int]
    SIGNER_INFO_FIELD_NUMBER: _ClassVar[int]
    REPORT_DATA_FIELD_NUMBER: _ClassVar[int]
    MEASUREMENT_FIELD_NUMBER: _ClassVar[int]
    HOST_DATA_FIELD_NUMBER: _ClassVar[int]
    ID_KEY_DIGEST_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_KEY_DIGEST_FIELD_NUMBER: _ClassVar[int]
    REPORT_ID_FIELD_NUMBER: _ClassVar[int]
    REPORT_ID_MA_FIELD_NUMBER: _ClassVar[int]
    REPORTED_TCB_FIELD_NUMBER: _ClassVar[int]
    CHIP_ID_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_TCB_FIELD_NUMBER: _ClassVar[int]
    CURRENT_BUILD_FIELD_NUMBER: _ClassVar[int]
    CURRENT_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENT_MAJOR_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_BUILD_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_MINOR_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_MAJOR_FIELD_NUMBER: _ClassVar[int]
    LAUNCH_TCB_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    CPUID1EAX_FMS_FIELD_NUMBER: _ClassVar[int]
    LAUNCH_MIT_VECTOR_FIELD_NUMBER: _ClassVar[int]
    CURRENT_MIT_VECTOR_FIELD_NUMBER: _ClassVar[int]
    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: int
    platform_info: int
    signer_info: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: int
    chip_id: bytes
    committed_tcb: int
    current_build: int
    current_minor: int
    current_major: int
    committed_build: int
    committed_minor: int
    committed_major: int
    launch_tcb: int
    signature: bytes
    cpuid1eax_fms: int
    launch_mit_vector: int
    current_mit_vector: int
    def __init__(self, version: _Optional[int] = ..., guest_svn: _Optional[int] = ..., policy: _Optional[int] = ..., family_id: _Optional[bytes] = ..., image_id: _Optional[bytes] = ..., vmpl: _Optional[int] = ..., signature_algo: _Optional[int] = ..., current_tcb: _Optional[int] = ..., platform_info: _Optional[int] = ..., signer_info: _Optional[int] = ..., report_data: _Optional[bytes] = ..., measurement: _Optional[bytes] = ..., host_data: _Optional[bytes] = ..., id_key_digest: _Optional[bytes] = ..., author_key_digest: _Optional[bytes] = ..., report_id: _Optional[bytes] = ..., report_id_ma: _Optional[bytes] = ..., reported_tcb: _Optional[int] = ..., chip_id: _Optional[bytes] = ..., committed_tcb: _Optional[int] = ..., current_build: _Optional[int] = ..., current_minor: _Optional[int] = ..., current_major: _Optional[int] = ..., committed_build: _Optional[int] = ..., committed_minor: _Optional[int] = ..., committed_major: _Optional[int] = ..., launch_tcb: _Optional[int] = ..., signature: _Optional[bytes] = ..., cpuid1eax_fms: _Optional[int] = ..., launch_mit_vector: _Optional[int] = ..., current_mit_vector: _Optional[int] = ...) -> None: ...

class CertificateChain(_message.Message):
    __slots__ = ("vcek_cert", "ask_cert", "ark_cert", "firmware_cert", "vlek_cert", "extras")
    class ExtrasEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    VCEK_CERT_FIELD_NUMBER: _ClassVar[int]
    ASK_CERT_FIELD_NUMBER: _ClassVar[int]
    ARK_CERT_FIELD_NUMBER: _ClassVar[int]
    FIRMWARE_CERT_FIELD_NUMBER: _ClassVar[int]
    VLEK_CERT_FIELD_NUMBER: _ClassVar[int]
    EXTRAS_FIELD_NUMBER: _ClassVar[int]
    vcek_cert: bytes
    ask_cert: bytes
    ark_cert: bytes
    firmware_cert: bytes
    vlek_cert: bytes
    extras: _containers.ScalarMap[str, bytes]
    def __init__(self, vcek_cert: _Optional[bytes] = ..., ask_cert: _Optional[bytes] = ..., ark_cert: _Optional[bytes] = ..., firmware_cert: _Optional[bytes] = ..., vlek_cert: _Optional[bytes] = ..., extras: _Optional[_Mapping[str, bytes]] = ...) -> None: ...

class SevProduct(_message.Message):
    __slots__ = ("name", "stepping", "machine_stepping")
    class SevProductName(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        SEV_PRODUCT_UNKNOWN: _ClassVar[SevProduct.SevProductName]
        SEV_PRODUCT_MILAN: _ClassVar[SevProduct.SevProductName]
        SEV_PRODUCT_GENOA: _ClassVar[SevProduct.SevProductName]
        SEV_PRODUCT_TURIN: _ClassVar[SevProduct.SevProductName]
    SEV_PRODUCT_UNKNOWN: SevProduct.SevProductName
    SEV_PRODUCT_MILAN: SevProduct.SevProductName
    SEV_PRODUCT_GENOA: SevProduct.SevProductName
    SEV_PRODUCT_TURIN: SevProduct.SevProductName
    NAME_FIELD_NUMBER: _ClassVar[int]
    STEPPING_FIELD_NUMBER: _ClassVar[int]
    MACHINE_STEPPING_FIELD_NUMBER: _ClassVar[int]
    name: SevProduct.SevProductName
    stepping: int
    machine_stepping: _wrappers_pb2.UInt32Value
    def __init__(self, name: _Optional[_Union[SevProduct.SevProductName, str]] = ..., stepping: _Optional[int] = ..., machine_stepping: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ...) -> None: ...

class Attestation(_message.Message):
    __slots__ = ("report", "certificate_chain", "product")
    REPORT_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_CHAIN_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    report: Report
    certificate_chain: CertificateChain
    product: SevProduct
    def __init__(self, report: _Optional[_Union[Report, _Mapping]] = ..., certificate_chain: _Optional[_Union[CertificateChain, _Mapping]] = ..., product: _Optional[_Union[SevProduct, _Mapping]] = ...) -> None: ...
