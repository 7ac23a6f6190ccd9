"""Worked dm-verity vectors (produced with veritysetup 2.6.1): fixed data, salt and block sizes."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from image.verity import Superblock, VerityParams, format_hash_tree, read_superblock, verify

from .conftest import SALT_S, SALT_Z, data16, data257, zero1m

INPUT_SHA256 = {
    "data16": "1825aaf11cd1111f8afbe3494b466123dfb6146aeccb4ce643c84423cea0540c",
    "data257": "a6b7ef605e6d2912629f3edee74b8c1804221c4c3d369ebb34b9765aa5e4d307",
    "zero1m": "30e14955ebf1352266dc2ff8067e68104607e750abb9d3b36582b8af909fcb58",
}

# id, input, params, hash blocks, root hash, sha256 of hash area (no superblock) or None
VECTORS = [
    ("V1", "data16", dict(salt=SALT_S), 1,
     "895fe938075b5140d130de8f6c40d6577899d7f589eaa8fe3d860923e2475ec5",
     "79a929bba6546090fb8f1586679c2f5ec690980c2eeaeb245e9fc0ec53aa9d05"),
    ("V2", "data257", dict(salt=SALT_S), 4,
     "6148cdf5276f089831bcf967c08484505723fbcc88ecc119b57e2f5ee911932a",
     "4d9e600f7a41b654682500657f32c5621398310f803541e59499e6b36e5d5314"),
    ("V3", "data257", dict(salt=SALT_S, hash_type=0), 4,
     "b2a2aa19d6be30a6919d5129f040320515034cb67576d389bd39de4ce4c9001c",
     "645c0c86679c10f81ede3e024ae703779997a80f3721f639b13fbd6c30e3ebf9"),
    ("V4", "data257", dict(salt=SALT_S, hash_name="sha1"), 4,
     "6979bc33dc8fb2e329772af3c4e93d445272965f",
     "34bed34ed045eeb77852bf68df86d928d7b6fd2bbd197e4cbf76ad237ebf3f17"),
    ("V5", "data257", dict(salt=SALT_S, hash_name="sha1", hash_type=0), 4,
     "1059d84b265d3f32433b0bfb228cdaf598042232",
     "643d6d4c2c783a9014ed06922527a19bf42b4bb427da596a240435f51cb10344"),
    ("V6", "data16", dict(salt=SALT_S, hash_name="sha512", data_block_size=512, hash_block_size=512), 19,
     "7cb689a2716d0d2a9466481939524a0f7ee7092a8ebb1bed0a8e592a48d285b7"
     "d69f610e1d8d1e27eefa6da093a9a7e1251887319212ef894180374e21ac34a9",
     "f63ba4ef64ed395b0fdd6a289a9ecccac04131d8967a1c07f1c74c682ce88231"),
    ("V7", "data257", dict(salt=b""), 4,
     "88825c64bd374bd7ba9e1f55eb730f5f1a3b3fc8447aa15cd8f134b80570ed4e", None),
    ("V8", "data16[:4096]", dict(salt=SALT_S), 0,
     "b9745fe341e07d389b6d9f15707a533883430575f72e0ae47db41f1af82608a6", ""),
    ("V9", "zero1m", dict(salt=SALT_Z), 3,
     "bef46122f85025cf37061b16c04e2a19960a5bbcdbb656b5e91ae7927c0ad807",
     "f3e97410bc657a9e8a60858fe05a1c9bd7c8f9aa2789837b0b2e223776be3a79"),
    ("V10", "zero1m", dict(salt=b""), 3,
     "5d98121f8aeff2a38a3fffee013f85980078507a0ffbd99e5a8d616ecfe7db6a", None),
    ("V11", "data257", dict(salt=SALT_Z, data_blocks=10), 1,
     "e88d6d926f3a9320a88a89bb32a0b227975dd24a9cb22145b5572b26e8da039d", None),
]


def _input(name: str) -> bytes:
    return {"data16": data16, "data257": data257, "zero1m": zero1m,
            "data16[:4096]": lambda: data16()[:4096]}[name]()


@pytest.mark.parametrize("name", sorted(INPUT_SHA256))
def test_inputs_are_regenerated_exactly(name: str) -> None:
    assert hashlib.sha256(_input(name)).hexdigest() == INPUT_SHA256[name]


@pytest.mark.parametrize(("vid", "data", "kw", "hash_blocks", "root", "area_sha"), VECTORS,
                         ids=[v[0] for v in VECTORS])
def test_vector_without_superblock(tmp_path: Path, vid: str, data: str, kw: dict[str, object],
                                   hash_blocks: int, root: str, area_sha: str | None) -> None:
    (tmp_path / "data").write_bytes(_input(data))
    result = format_hash_tree(tmp_path / "data", tmp_path / "hash", VerityParams(superblock=False, **kw))  # type: ignore[arg-type]
    assert result.root_hex == root
    assert result.hash_blocks == hash_blocks
    written = (tmp_path / "hash").read_bytes()
    assert len(written) == hash_blocks * result.params.hash_block_size
    if area_sha is not None:
        assert hashlib.sha256(written).hexdigest() == (area_sha or hashlib.sha256(b"").hexdigest())
    # and our verifier accepts what we wrote
    verify(tmp_path / "data", tmp_path / "hash", root, result.params)


@pytest.mark.parametrize(("vid", "data", "kw", "hash_blocks", "root", "area_sha"), VECTORS,
                         ids=[v[0] for v in VECTORS])
def test_vector_with_superblock(tmp_path: Path, vid: str, data: str, kw: dict[str, object],
                                hash_blocks: int, root: str, area_sha: str | None) -> None:
    (tmp_path / "data").write_bytes(_input(data))
    params = VerityParams(uuid="12345678-1234-1234-1234-123456789abc", **kw)  # type: ignore[arg-type]
    result = format_hash_tree(tmp_path / "data", tmp_path / "hash", params)
    assert result.root_hex == root
    hbs = result.params.hash_block_size
    written = (tmp_path / "hash").read_bytes()
    if hash_blocks:
        assert len(written) == hbs + hash_blocks * hbs
    if area_sha:
        assert hashlib.sha256(written[hbs:]).hexdigest() == area_sha
    verify(tmp_path / "data", tmp_path / "hash", root)  # parameters from the superblock


def test_v1_superblock_bytes(tmp_path: Path) -> None:
    (tmp_path / "data").write_bytes(data16())
    format_hash_tree(tmp_path / "data", tmp_path / "hash",
                     VerityParams(salt=SALT_S, uuid="12345678-1234-1234-1234-123456789abc"))
    raw = (tmp_path / "hash").read_bytes()
    assert len(raw) == 8192
    expected = (b"verity\0\0" + (1).to_bytes(4, "little") + (1).to_bytes(4, "little")
                + bytes.fromhex("12345678123412341234123456789abc") + b"sha256".ljust(32, b"\0")
                + bytes.fromhex("00100000" "00100000" "1000000000000000" "2000") + bytes(6) + SALT_S)
    assert raw[:len(expected)] == expected
    assert raw[len(expected):4096] == bytes(4096 - len(expected))
    sb = read_superblock(tmp_path / "hash")
    assert sb == Superblock(1, "12345678-1234-1234-1234-123456789abc", "sha256", 4096, 4096, 16, SALT_S)
    assert sb.encode() == raw[:512]


@pytest.mark.parametrize(("superblock", "size", "start_block"), [(True, 73728, 17), (False, 69632, 16)])
def test_combined_file_variant(tmp_path: Path, superblock: bool, size: int, start_block: int) -> None:
    path = tmp_path / "combined"
    path.write_bytes(data16())
    result = format_hash_tree(path, path, VerityParams(salt=SALT_S, superblock=superblock,
                                                       hash_offset=65536, data_blocks=16))
    assert result.root_hex == "895fe938075b5140d130de8f6c40d6577899d7f589eaa8fe3d860923e2475ec5"
    assert os.path.getsize(path) == size
    assert result.hash_start_block == start_block
    assert path.read_bytes()[:65536] == data16()  # data untouched


def test_v1_hash_file_copy_verifies_elsewhere(tmp_path: Path) -> None:
    (tmp_path / "data").write_bytes(data16())
    result = format_hash_tree(tmp_path / "data", tmp_path / "hash", VerityParams(salt=SALT_S))
    shutil.copy(tmp_path / "hash", tmp_path / "copy")
    assert verify(tmp_path / "data", tmp_path / "copy", result.root_hash).root_hash == result.root_hash
