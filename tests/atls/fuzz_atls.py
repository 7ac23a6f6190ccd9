"""atheris targets: aTLS/Coordinator parsers over attacker bytes raise only our typed errors.

    python -m tests.atls.fuzz_atls evidence|manifest -max_total_time=N [corpus]

`evidence`: SNP evidence decoding and full validation (what a MeshAPI handshake runs on a client's
certificate extension). `manifest`: manifest parsing (what SetManifest runs on the request body).
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from attestation.atls import AtlsError, wire
    from attestation.atls.platforms import SnpValidator
    from attestation.reference_values import ReferenceValues
    from coordinator import manifest

RV = ReferenceValues.from_obj({"snp": [{
    "ProductName": "Milan", "TrustedMeasurement": "00" * 48,
    "MinimumTCB": {"BootloaderVersion": 0, "TEEVersion": 0, "SNPVersion": 0, "MicrocodeVersion": 0},
    "GuestPolicy": {"SMT": True},
}]}).snp
VALIDATOR = SnpValidator(RV)


def evidence(data: bytes) -> None:
    with contextlib.suppress(AtlsError):
        VALIDATOR.validate(data, bytes(64))
    with contextlib.suppress(AtlsError):
        wire.nonce_from_alpn([data[:100], data[100:]])


def manifest_target(data: bytes) -> None:
    with contextlib.suppress(manifest.ManifestInvalidError):
        manifest.parse(data)


def main() -> None:
    target = {"evidence": evidence, "manifest": manifest_target}[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
