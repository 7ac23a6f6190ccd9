"""The owner anchor: the data owner's keys, measured into the Coordinator's own initdata.

Everything in the state directory is the host's to rewrite, so a restarted Coordinator cannot learn
from its disk who its owner is. Its initdata is different: it is bound to the launch evidence
(HOST_DATA / MRCONFIGID), and changing it changes the Coordinator policy hash that the owner's CLI
pins. When that document carries an ``owners.json`` entry

    {"SeedshareOwnerPubKeys": ["<hex PKCS#1 DER>", ...], "WorkloadOwnerKeyDigests": ["<hex sha256>", ...]}

the Coordinator accepts only manifests whose owner keys are among these, a first manifest only from a
listed workload owner, and a recovery only from a listed seedshare owner. Without the entry it behaves
as Contrast does (the first manifest and its keys are taken on trust).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from attestation.initdata import InitdataError
from attestation.initdata import parse as parse_initdata
from coordinator import manifest as manifest_mod
from coordinator.errors import OwnerAnchorError, UnanchoredOwnerError
from coordinator.manifest import Manifest

OWNERS_ENTRY = "owners.json"
_FIELDS = ("SeedshareOwnerPubKeys", "WorkloadOwnerKeyDigests")


def _hex_list(doc: dict[str, Any], name: str, size: int | None) -> frozenset[str]:
    value = doc.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise OwnerAnchorError(f"{OWNERS_ENTRY}: {name} must be a list of hex strings")
    out = set()
    for item in value:
        try:
            raw = bytes.fromhex(item)
        except ValueError as exc:
            raise OwnerAnchorError(f"{OWNERS_ENTRY}: {name} entry {item[:20]!r} is not hex") from exc
        if size is not None and len(raw) != size:
            raise OwnerAnchorError(f"{OWNERS_ENTRY}: {name} entry has {len(raw)} bytes, expected {size}")
        if size is None:
            try:
                manifest_mod.load_seedshare_key(item)
            except ValueError as exc:
                raise OwnerAnchorError(f"{OWNERS_ENTRY}: {name} entry is not an RSA PKCS#1 key") from exc
        out.add(raw.hex())
    return frozenset(out)


@dataclass(frozen=True)
class OwnerAnchor:
    seedshare_owner_pub_keys: frozenset[str]
    workload_owner_key_digests: frozenset[str]

    @classmethod
    def from_json(cls, raw: str) -> OwnerAnchor:
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise OwnerAnchorError(f"{OWNERS_ENTRY} is not JSON: {exc}") from exc
        if not isinstance(doc, dict) or set(doc) - set(_FIELDS):
            fields = ", ".join(_FIELDS)
            raise OwnerAnchorError(f"{OWNERS_ENTRY} must be an object with only the fields {fields}")
        seedshare = _hex_list(doc, "SeedshareOwnerPubKeys", None)
        if not seedshare:
            raise OwnerAnchorError(f"{OWNERS_ENTRY}: SeedshareOwnerPubKeys is empty: nobody could recover")
        return cls(seedshare, _hex_list(doc, "WorkloadOwnerKeyDigests", 32))

    @classmethod
    def from_initdata(cls, raw: bytes) -> OwnerAnchor | None:
        """The anchor in an initdata document, or None when it carries no owner entry."""
        try:
            doc = parse_initdata(raw)
        except InitdataError as exc:
            raise OwnerAnchorError(f"the Coordinator's initdata does not parse: {exc}") from exc
        entry = doc.data.get(OWNERS_ENTRY)
        return None if entry is None else cls.from_json(entry)

    def to_json(self) -> str:
        return json.dumps({
            "SeedshareOwnerPubKeys": sorted(self.seedshare_owner_pub_keys),
            "WorkloadOwnerKeyDigests": sorted(self.workload_owner_key_digests),
        }, indent=2)

    def check_manifest(self, manifest: Manifest, where: str) -> None:
        """Raise UnanchoredOwnerError unless every owner key of `manifest` is an anchored one."""
        _subset(manifest.seedshare_owner_pub_keys, self.seedshare_owner_pub_keys,
                f"{where}: SeedshareOwnerPubKeys names a key the Coordinator's initdata does not list",
                _short)
        if self.workload_owner_key_digests:
            _subset(manifest.workload_owner_key_digests, self.workload_owner_key_digests,
                    f"{where}: WorkloadOwnerKeyDigests names a key the Coordinator's initdata does not list",
                    lambda digest: digest[:16])

    def check_seedshare_owner(self, hex_pkcs1: str) -> None:
        if hex_pkcs1.lower() not in self.seedshare_owner_pub_keys:
            raise UnanchoredOwnerError(
                "the client key is not a seedshare owner named in the Coordinator's measured initdata",
                found=_short(hex_pkcs1),
                expected=" or ".join(_short(k) for k in sorted(self.seedshare_owner_pub_keys)),
            )

    def check_workload_owner(self, digest_hex: str | None) -> None:
        if not self.workload_owner_key_digests:
            return
        if digest_hex is None or digest_hex not in self.workload_owner_key_digests:
            raise UnanchoredOwnerError(
                "the first manifest must come from a workload owner named in the Coordinator's initdata",
                found=digest_hex or "no client key",
                expected=" or ".join(sorted(self.workload_owner_key_digests)),
            )


def _short(hex_pkcs1: str) -> str:
    """A seedshare key as the prefix of its SHA-256 (the hex of the key itself starts alike for all)."""
    return "sha256:" + hashlib.sha256(bytes.fromhex(hex_pkcs1)).hexdigest()[:16]


def _subset(have: Iterable[str], allowed: frozenset[str], what: str, show: Callable[[str], str]) -> None:
    extra = sorted({h.lower() for h in have} - allowed)
    if extra:
        raise UnanchoredOwnerError(what, found=", ".join(show(e) for e in extra),
                                   expected="only keys from the measured owner list")
