"""ID block, ID auth and Contrast's deterministic ID key; the vCPU-count iteration."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from image.measure import UnsupportedInputError, parse_firmware
from image.measure.idblock import (
    GuestPolicy,
    IdBlock,
    contrast_id_auth,
    contrast_id_key,
    extend_vcpus,
    id_key_bytes,
    id_key_digest,
    match_vcpu_count,
    recover_id_keys,
    sign_id_block,
)
from image.measure.snp import snp_launch_digest
from tests.measure.vectors import MEASURE, idblock_cases, index

CASES = idblock_cases()


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_contrast_vectors(case: dict[str, Any]) -> None:
    policy = GuestPolicy(**case["guest_policy_json"])
    assert policy.to_u64() == case["guest_policy_u64"]
    block = IdBlock(bytes.fromhex(case["launch_digest_hex"]), policy.to_u64())
    raw = block.to_bytes()
    assert raw.hex() == case["expected_id_block_hex"]
    assert base64.b64encode(raw).decode() == case["id_block_base64"]
    assert hashlib.sha384(raw).hexdigest() == case["id_block_sha384_hex"]
    keys = recover_id_keys(hashlib.sha384(raw).digest(), 2, 1)
    assert [(f"{x:096x}", f"{y:096x}") for x, y in keys] == [
        (c["x_hex"], c["y_hex"]) for c in case["recovered_candidates_sorted"]
    ]
    key = contrast_id_key(block)
    assert key.hex() == case["id_key_0x404_hex"]
    assert id_key_digest(key).hex() == case["id_key_digest_sha384_hex"]
    auth = contrast_id_auth(block)
    assert hashlib.sha256(auth).hexdigest() == case["id_auth_0x1000_sha256_hex"]
    assert base64.b64encode(auth).decode() == case["id_auth_0x1000_base64"]


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_recovered_keys_verify_the_fixed_signature(case: dict[str, Any]) -> None:
    """Independent check with OpenSSL (via cryptography): both candidates verify (r=2, s=1)."""
    block = IdBlock(bytes.fromhex(case["launch_digest_hex"]), case["guest_policy_u64"]).to_bytes()
    for x, y in recover_id_keys(hashlib.sha384(block).digest(), 2, 1):
        public = ec.EllipticCurvePublicNumbers(x, y, ec.SECP384R1()).public_key()
        public.verify(encode_dss_signature(2, 1), block, ec.ECDSA(hashes.SHA384()))


def test_sev_snp_measure_id_block_vector() -> None:
    """sev-snp-measure tests/test_id_block.py: the deterministic parts of its output."""
    vec = index()["snp"]["id_block"]
    ld = base64.b64decode(vec["ld_base64"])
    block = IdBlock(ld, 0x30000, family_id=bytes(16), image_id=bytes(16), version=1, guest_svn=0)
    want_block, want_key, want_author = vec["expected_substrings"]
    assert want_block == "id-block=" + base64.b64encode(block.to_bytes()).decode()

    def load(name: str) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key((MEASURE / vec[name]).read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key

    id_key, author_key = load("id_key"), load("author_key")
    auth = sign_id_block(block, id_key, author_key)
    id_key_field, author_field = auth[0x240:0x644], auth[0x880:0xC84]
    assert want_key == "id_key_hash: " + base64.b64encode(id_key_digest(id_key_field)).decode()
    assert want_author == "author_key: " + base64.b64encode(id_key_digest(author_field)).decode()
    # The block signature in the auth structure verifies with the ID key.
    r = int.from_bytes(auth[0x40:0x88], "little")
    s = int.from_bytes(auth[0x88:0xD0], "little")
    id_key.public_key().verify(encode_dss_signature(r, s), block.to_bytes(), ec.ECDSA(hashes.SHA384()))
    n = id_key.public_key().public_numbers()
    assert id_key_field == id_key_bytes(n.x, n.y)


@pytest.mark.parametrize("vcpu_sig", [0xA00F11, 0xA10F10])
def test_vcpu_iteration_equals_direct_measurement(vcpu_sig: int) -> None:
    fw = parse_firmware((MEASURE / "synthetic/fw_syn_a.bin").read_bytes())
    seed = snp_launch_digest(fw, 1, vcpu_sig, 0x1)
    ap_eip = fw.sev_es_reset_eip
    assert ap_eip is not None
    for vcpus in range(1, 9):
        direct = snp_launch_digest(fw, vcpus, vcpu_sig, 0x1)
        assert extend_vcpus(seed, ap_eip, vcpu_sig, 0x1, vcpus) == direct
        assert match_vcpu_count(direct, seed, ap_eip, vcpu_sig, 0x1) == vcpus
    other = bytearray(snp_launch_digest(fw, 3, vcpu_sig, 0x1))
    other[0] ^= 1
    assert match_vcpu_count(bytes(other), seed, ap_eip, vcpu_sig, 0x1) is None


def test_policy_bits() -> None:
    assert GuestPolicy().to_u64() == 0x30000
    assert GuestPolicy(SMT=False, Debug=True, ABIMajor=1, ABIMinor=2).to_u64() == 0x20000 | 1 << 19 | 0x102
    assert GuestPolicy().to_json() == {
        "ABIMinor": 0,
        "ABIMajor": 0,
        "SMT": True,
        "MigrateMA": False,
        "Debug": False,
        "SingleSocket": False,
    }
    with pytest.raises(UnsupportedInputError):
        GuestPolicy(ABIMinor=256)
    with pytest.raises(UnsupportedInputError):
        IdBlock(bytes(47), 0x30000)
