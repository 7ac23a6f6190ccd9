"""The manifest: which pods may join (policy hashes), on which hardware (reference values), and who
may change it (owner keys). Stable v1.x layout (Contrast internal/manifest), parsed from the exact
bytes the data owner sent; the bytes themselves are what gets hashed and stored.

`parse` returns a frozen `Manifest` or raises `ManifestError` listing every problem, one per line,
as ``<Path>: <message>``. Problems that only mean "the user still has to fill this in" are
flagged `expected_missing` (what `contrast generate` reports).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from attestation import ReferenceValues, ReferenceValuesError, SnpReferenceValues, TdxReferenceValues
from coordinator.errors import ManifestError

ROLE_COORDINATOR = "coordinator"
ROLES = ("", ROLE_COORDINATOR)
MAX_MANIFEST = 16 * 1024 * 1024
_MISSING = "expected missing: must be filled in"


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    expected_missing: bool = False

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ManifestInvalidError(ManifestError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("", "\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class PolicyEntry:
    sans: tuple[str, ...] = ()
    workload_secret_id: str = ""
    role: str = ""


@dataclass(frozen=True)
class Manifest:
    raw: bytes
    policies: Mapping[str, PolicyEntry]
    reference_values: ReferenceValues
    workload_owner_key_digests: tuple[str, ...]
    seedshare_owner_pub_keys: tuple[str, ...]
    doc: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.raw).digest()

    def coordinator_policy_hash(self) -> str:
        return next(h for h, e in self.policies.items() if e.role == ROLE_COORDINATOR)

    def policy(self, host_data: bytes) -> PolicyEntry | None:
        return self.policies.get(host_data.hex())


def _hex(problems: list[Problem], path: str, value: Any, size: int, missing_ok: bool = False) -> None:
    if not isinstance(value, str):
        problems.append(Problem(path, f"expected a hex string of {size} bytes, got {type(value).__name__}"))
        return
    if value == "":
        problems.append(Problem(path, _MISSING, expected_missing=missing_ok))
        return
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        problems.append(Problem(path, f"not a hex string: {value[:20]!r}"))
        return
    if len(raw) != size:
        problems.append(Problem(path, f"invalid length: {len(value)} (expected {2 * size})"))


def _reference_values(problems: list[Problem], snp: list[Any], tdx: list[Any]) -> ReferenceValues:
    """Every entry through attestation's parser (the one set of reference-value rules); one problem
    per entry that does not parse, carrying the parser's JSON path."""
    entries: dict[str, list[Any]] = {"snp": [], "tdx": []}
    for kind, items, parse_entry in (
        ("snp", snp, SnpReferenceValues.from_obj),
        ("tdx", tdx, TdxReferenceValues.from_obj),
    ):
        for i, rv in enumerate(items):
            try:
                entries[kind].append(parse_entry(rv, f"ReferenceValues.{kind}[{i}]"))
            except ReferenceValuesError as exc:
                problems.extend(Problem(e.path, e.reason, e.expected_missing) for e in exc.problems)
    return ReferenceValues(snp=tuple(entries["snp"]), tdx=tuple(entries["tdx"]))


def check(doc: Any) -> list[Problem]:
    """Every problem with a decoded manifest document (empty list: valid)."""
    return _check(doc)[0]


def _check(doc: Any) -> tuple[list[Problem], ReferenceValues]:
    problems: list[Problem] = []
    if not isinstance(doc, dict):
        return [Problem("", "manifest must be a JSON object")], ReferenceValues()
    policies = doc.get("Policies") or {}
    if not isinstance(policies, dict):
        problems.append(Problem("Policies", "expected an object"))
        policies = {}
    coordinators = 0
    for key, entry in policies.items():
        path = f"Policies[{key!r}]"
        try:
            raw = bytes.fromhex(key)
            if len(raw) != 32:
                problems.append(Problem(path, f"invalid policy hash length: {len(key)} (expected 64)"))
        except ValueError:
            problems.append(Problem(path, f"decoding policy hash {key!r}: not hex"))
        if key != key.lower():
            problems.append(Problem(path, "policy hash must be lower-case hex"))
        if not isinstance(entry, dict):
            problems.append(Problem(path, "expected an object"))
            continue
        role = entry.get("Role", "") or ""
        if role not in ROLES:
            problems.append(Problem(f"{path}.Role", f"unknown role: {role}"))
        coordinators += role == ROLE_COORDINATOR
        sans = entry.get("SANs")
        if sans is not None and (not isinstance(sans, list) or not all(isinstance(s, str) for s in sans)):
            problems.append(Problem(f"{path}.SANs", "expected a list of strings"))
        if not isinstance(entry.get("WorkloadSecretID", ""), str):
            problems.append(Problem(f"{path}.WorkloadSecretID", "expected a string"))
    if coordinators != 1:
        msg = f"{coordinators} policies with role coordinator, expected exactly 1"
        problems.append(Problem("Policies", msg))
    rvs = doc.get("ReferenceValues") or {}
    if not isinstance(rvs, dict):
        problems.append(Problem("ReferenceValues", "expected an object"))
        rvs = {}
    snp, tdx = rvs.get("snp") or [], rvs.get("tdx") or []
    if not isinstance(snp, list) or not isinstance(tdx, list):
        problems.append(Problem("ReferenceValues", "snp and tdx must be lists"))
        snp, tdx = [], []
    if not snp and not tdx:
        problems.append(Problem("ReferenceValues", "no SNP or TDX reference values, expected at least one"))
    reference_values = _reference_values(problems, snp, tdx)
    for i, digest in enumerate(doc.get("WorkloadOwnerKeyDigests") or []):
        _hex(problems, f"WorkloadOwnerKeyDigests[{i}]", digest, 32)
    for i, key in enumerate(doc.get("SeedshareOwnerPubKeys") or []):
        try:
            pub = serialization.load_der_public_key(_pkcs1_to_spki(bytes.fromhex(key)))
            if not isinstance(pub, rsa.RSAPublicKey):
                raise ValueError("not RSA")
        except (ValueError, TypeError) as exc:
            problems.append(Problem(f"SeedshareOwnerPubKeys[{i}]", f"not a hex PKCS#1 RSA public key: {exc}"))
    return problems, reference_values


def _pkcs1_to_spki(pkcs1: bytes) -> bytes:
    # Wrap a PKCS#1 RSAPublicKey in a SubjectPublicKeyInfo so cryptography can load it.
    alg = bytes.fromhex("300d06092a864886f70d0101010500")
    bitstring = b"\x03" + _der_len(len(pkcs1) + 1) + b"\x00" + pkcs1
    body = alg + bitstring
    return b"\x30" + _der_len(len(body)) + body


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def load_seedshare_key(hex_pkcs1: str) -> rsa.RSAPublicKey:
    pub = serialization.load_der_public_key(_pkcs1_to_spki(bytes.fromhex(hex_pkcs1)))
    if not isinstance(pub, rsa.RSAPublicKey):
        raise ManifestError("SeedshareOwnerPubKeys", "not an RSA key")
    return pub


def pkcs1_der(pub: rsa.RSAPublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)


def parse(raw: bytes) -> Manifest:
    """Decode and validate manifest bytes; raise ManifestInvalidError with every problem."""
    if len(raw) > MAX_MANIFEST:
        raise ManifestInvalidError([Problem("", f"manifest has {len(raw)} bytes, limit {MAX_MANIFEST}")])
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestInvalidError([Problem("", f"manifest is not valid JSON: {exc}")]) from exc
    problems, reference_values = _check(doc)
    if problems:
        raise ManifestInvalidError(problems)
    policies = {
        key: PolicyEntry(
            sans=tuple(entry.get("SANs") or ()),
            workload_secret_id=entry.get("WorkloadSecretID", "") or "",
            role=entry.get("Role", "") or "",
        )
        for key, entry in doc.get("Policies", {}).items()
    }
    return Manifest(
        raw=raw,
        policies=policies,
        reference_values=reference_values,
        workload_owner_key_digests=tuple(doc.get("WorkloadOwnerKeyDigests") or ()),
        seedshare_owner_pub_keys=tuple(doc.get("SeedshareOwnerPubKeys") or ()),
        doc=doc,
    )
