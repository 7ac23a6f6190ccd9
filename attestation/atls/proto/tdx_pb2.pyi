# mypy: ignore-errors
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Header(_message.Message):
    __slots__ = ("version", "attestation_key_type", "tee_type", "qe_svn", "pce_svn", "qe_vendor_id", "user_data")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ATTESTATION_KEY_TYPE_FIELD_NUMBER: _ClassVar[int]
    TEE_TYPE_FIELD_NUMBER: _ClassVar[int]
    QE_SVN_FIELD_NUMBER: _ClassVar[int]
    PCE_SVN_FIELD_NUMBER: _ClassVar[int]
    QE_VENDOR_ID_FIELD_NUMBER: _ClassVar[int]
    USER_DATA_FIELD_NUMBER: _ClassVar[int]
    version: int
    attestation_key_type: int
    tee_type: int
    qe_svn: bytes
    pce_svn: bytes
    qe_vendor_id: bytes
    user_data: bytes
    def __init__(self, version: _Optional[int] = ..., attestation_key_type: _Optional[int] = ..., tee_type: _Optional[int] = ..., qe_svn: _Optional[bytes] = ..., pce_svn: _Optional[bytes] = ..., qe_vendor_id: _Optional[bytes] = ..., user_data: _Optional[bytes] = ...) -> None: ...

class TDQuoteBody(_message.Message):
    __slots__ = ("tee_tcb_svn", "mr_seam", "mr_signer_seam", "seam_attributes", "td_attributes", "xfam", "mr_td", "mr_config_id", "mr_owner", "mr_owner_config", "rtmrs", "report_data")
    TEE_TCB_SVN_FIELD_NUMBER: _ClassVar[int]
    MR_SEAM_FIELD_NUMBER: _ClassVar[int]
    MR_SIGNER_SEAM_FIELD_NUMBER: _ClassVar[int]
    SEAM_ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    TD_ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    XFAM_FIELD_NUMBER: _ClassVar[int]
    MR_TD_FIELD_NUMBER: _ClassVar[int]
    MR_CONFIG_ID_FIELD_NUMBER: _ClassVar[int]
    MR_OWNER_FIELD_NUMBER: _ClassVar[int]
    MR_OWNER_CONFIG_FIELD_NUMBER: _ClassVar[int]
    RTMRS_FIELD_NUMBER: _ClassVar[int]
    REPORT_DATA_FIELD_NUMBER: _ClassVar[int]
    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmrs: _containers.RepeatedScalarFieldContainer[bytes]
    report_data: bytes
    def __init__(self, tee_tcb_svn: _Optional[bytes] = ..., mr_seam: _Optional[bytes] = ..., mr_signer_seam: _Optional[bytes] = ..., seam_attributes: _Optional[bytes] = ..., td_attributes: _Optional[bytes] = ..., xfam: _Optional[bytes] = ..., mr_td: _Optional[bytes] = ..., mr_config_id: _Optional[bytes] = ..., mr_owner: _Optional[bytes] = ..., mr_owner_config: _Optional[bytes] = ..., rtmrs: _Optional[_Iterable[bytes]] = ..., report_data: _Optional[bytes] = ...) -> None: ...

class EnclaveReport(_message.Message):
    __slots__ = ("cpu_svn", "misc_select", "reserved1", "attributes", "mr_enclave", "reserved2", "mr_signer", "reserved3", "isv_prod_id", "isv_svn", "reserved4", "report_data")
    CPU_SVN_FIELD_NUMBER: _ClassVar[int]
    MISC_SELECT_FIELD_NUMBER: _ClassVar[int]
    RESERVED1_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    MR_ENCLAVE_FIELD_NUMBER: _ClassVar[int]
    RESERVED2_FIELD_NUMBER: _ClassVar[int]
    MR_SIGNER_FIELD_NUMBER: _ClassVar[int]
    RESERVED3_FIELD_NUMBER: _ClassVar[int]
    ISV_PROD_ID_FIELD_NUMBER: _ClassVar[int]
    ISV_SVN_FIELD_NUMBER: _ClassVar[int]
    RESERVED4_FIELD_NUMBER: _ClassVar[int]
    REPORT_DATA_FIELD_NUMBER: _ClassVar[int]
    cpu_svn: bytes
    misc_select: int
    reserved1: bytes
    attributes: bytes
    mr_enclave: bytes
    reserved2: bytes
    mr_signer: bytes
    reserved3: bytes
    isv_prod_id: int
    isv_svn: int
    reserved4: bytes
    report_data: bytes
    def __init__(self, cpu_svn: _Optional[bytes] = ..., misc_select: _Optional[int] = ..., reserved1: _Optional[bytes] = ..., attributes: _Optional[bytes] = ..., mr_enclave: _Optional[bytes] = ..., reserved2: _Optional[bytes] = ..., mr_signer: _Optional[bytes] = ..., reserved3: _Optional[bytes] = ..., isv_prod_id: _Optional[int] = ..., isv_svn: _Optional[int] = ..., reserved4: _Optional[bytes] = ..., report_data: _Optional[bytes] = ...) -> None: ...

class QeAuthData(_message.Message):
    __slots__ = ("parsed_data_size", "data")
    PARSED_DATA_SIZE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    parsed_data_size: int
    data: bytes
    def __init__(self, parsed_data_size: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class PCKCertificateChainData(_message.Message):
    __slots__ = ("certificate_data_type", "size", "pck_cert_chain")
    CERTIFICATE_DATA_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    PCK_CERT_CHAIN_FIELD_NUMBER: _ClassVar[int]
    certificate_data_type: int
    size: int
    pck_cert_chain: bytes
    def __init__(self, certificate_data_type: _Optional[int] = ..., size: _Optional[int] = ..., pck_cert_chain: _Optional[bytes] = ...) -> None: ...

class QEReportCertificationData(_message.Message):
    __slots__ = ("qe_report", "qe_report_signature", "qe_auth_data", "pck_certificate_chain_data")
    QE_REPORT_FIELD_NUMBER: _ClassVar[int]
    QE_REPORT_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    QE_AUTH_DATA_FIELD_NUMBER: _ClassVar[int]
    PCK_CERTIFICATE_CHAIN_DATA_FIELD_NUMBER: _ClassVar[int]
    qe_report: EnclaveReport
    qe_report_signature: bytes
    qe_auth_data: QeAuthData
    pck_certificate_chain_data: PCKCertificateChainData
    def __init__(self, qe_report: _Optional[_Union[EnclaveReport, _Mapping]] = ..., qe_report_signature: _Optional[bytes] = ..., qe_auth_data: _Optional[_Union[QeAuthData, _Mapping]] = ..., pck_certificate_chain_data: _Optional[_Union[PCKCertificateChainData, _Mapping]] = ...) -> None: ...

class CertificationData(_message.Message):
    __slots__ = ("certificate_data_type", "size", "qe_report_certification_data")
    CERTIFICATE_DATA_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    QE_REPORT_CERTIFICATION_DATA_FIELD_NUMBER: _ClassVar[int]
    certificate_data_type: int
    size: int
    qe_report_certification_data: QEReportCertificationData
    def __init__(self, certificate_data_type: _Optional[int] = ..., size: _Optional[int] = ..., qe_report_certification_data: _Optional[_Union[QEReportCertificationData, _Mapping]] = ...) -> None: ...

class Ecdsa256BitQuoteV4AuthData(_message.Message):
    __slots__ = ("signature", "ecdsa_attestation_key", "certification_data")
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    ECDSA_ATTESTATION_KEY_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATION_DATA_FIELD_NUMBER: _ClassVar[int]
    signature: bytes
    ecdsa_attestation_key: bytes
    certification_data: CertificationData
    def __init__(self, signature: _Optional[bytes] = ..., ecdsa_attestation_key: _Optional[bytes] = ..., certification_data: _Optional[_Union[CertificationData, _Mapping]] = ...) -> None: ...

class QuoteV4(_message.Message):
    __slots__ = ("header", "td_quote_body", "signed_data_size", "signed_data", "extra_bytes")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    TD_QUOTE_BODY_FIELD_NUMBER: _ClassVar[int]
    SIGNED_DATA_SIZE_FIELD_NUMBER: _ClassVar[int]
    SIGNED_DATA_FIELD_NUMBER: _ClassVar[int]
    EXTRA_BYTES_FIELD_NUMBER: _ClassVar[int]
    header: Header
    td_quote_body: TDQuoteBody
    signed_data_size: int
    signed_data: Ecdsa256BitQuoteV4AuthData
    extra_bytes: bytes
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., td_quote_body: _Optional[_Union[TDQuoteBody, _Mapping]] = ..., signed_data_size: _Optional[int] = ..., signed_data: _Optional[_Union[Ecdsa256BitQuoteV4AuthData, _Mapping]] = ..., extra_bytes: _Optional[bytes] = ...) -> None: ...
