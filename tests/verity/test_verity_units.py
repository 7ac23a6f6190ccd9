"""Units of image.verity without the oracle: superblock, geometry, tables, parameters, workers."""

from __future__ import annotations

import contextlib
import os
import struct
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from image.verity import (
    DeviceError,
    ParameterError,
    Superblock,
    SuperblockError,
    TreeGeometry,
    VerityParams,
    VerityResult,
    dm_mod_create,
    format_hash_tree,
    kernel_table,
    parse_salt,
    verify,
)
from image.verity.pipeline import PARALLEL_MIN_BYTES

from .conftest import SALT_S, data16

superblocks = st.builds(
    Superblock,
    hash_type=st.sampled_from([0, 1]),
    uuid=st.uuids().map(str),
    hash_name=st.sampled_from(["sha1", "sha256", "sha512", "sha3-256", "blake2b-512"]),
    data_block_size=st.sampled_from([512 << k for k in range(11)]),
    hash_block_size=st.sampled_from([512 << k for k in range(11)]),
    data_blocks=st.integers(1, 2**63 - 1),
    salt=st.binary(max_size=256),
)


@given(superblocks)
def test_superblock_round_trip(sb: Superblock) -> None:
    raw = sb.encode()
    assert len(raw) == 512
    assert Superblock.decode(raw) == sb


@given(st.binary(min_size=512, max_size=600))
def test_superblock_decode_random_bytes_only_raises_superblock_error(raw: bytes) -> None:
    with contextlib.suppress(SuperblockError):
        Superblock.decode(raw)


@given(superblocks, st.integers(0, 87), st.integers(1, 255))
def test_superblock_decode_flipped_header_byte(sb: Superblock, index: int, mask: int) -> None:
    raw = bytearray(sb.encode())
    raw[index] ^= mask
    try:
        decoded = Superblock.decode(bytes(raw))
    except SuperblockError:
        return
    # Like cryptsetup, only the reserved bytes and the name field after its NUL are not looked at.
    ignored = set(range(82, 88)) | set(range(32 + len(sb.hash_name) + 1, 64))
    assert decoded != sb or index in ignored


@pytest.mark.parametrize(("field", "offset", "value"), [
    ("signature", 0, b"verity\0\1"), ("version", 8, struct.pack("<I", 2)),
    ("hash type", 12, struct.pack("<I", 2)), ("hash algorithm", 32, b"nohash\0"),
    ("data block size", 64, struct.pack("<I", 1000)), ("hash block size", 68, struct.pack("<I", 256)),
    ("data blocks", 72, struct.pack("<Q", 0)), ("salt size", 80, struct.pack("<H", 257)),
])
def test_superblock_rejections_name_the_field(field: str, offset: int, value: bytes) -> None:
    raw = bytearray(Superblock(1, "12345678-1234-1234-1234-123456789abc", "sha256", 4096, 4096, 16,
                               SALT_S).encode())
    raw[offset:offset + len(value)] = value
    with pytest.raises(SuperblockError) as info:
        Superblock.decode(bytes(raw))
    assert field.split()[0] in str(info.value)


@given(st.integers(1, 10**12), st.sampled_from([20, 32, 64]), st.sampled_from([512, 4096, 65536]))
def test_geometry_matches_a_direct_count(blocks: int, digest: int, hbs: int) -> None:
    g = TreeGeometry.compute(digest_size=digest, data_block_size=4096, hash_block_size=hbs, hash_type=1,
                             data_blocks=blocks, hash_offset=0, superblock=False)
    per = 1 << ((hbs // digest).bit_length() - 1)
    sizes, n = [], blocks
    while n > 1:  # each level is ceil(previous / per) until a single block remains
        n = -(-n // per)
        sizes.append(n)
    assert list(g.level_sizes) == sizes
    assert g.level_starts[-1] == 0 if sizes else True
    assert g.hash_end == sum(sizes) * hbs


def test_parse_salt() -> None:
    assert parse_salt("-") == parse_salt("") == b""
    assert parse_salt("00FF") == b"\x00\xff"
    for bad in ("0", "zz", "ab" * 257):
        with pytest.raises(ParameterError):
            parse_salt(bad)


@pytest.mark.parametrize("kwargs", [
    {"data_block_size": 256}, {"hash_block_size": 3000}, {"hash_block_size": 1 << 20}, {"hash_type": 2},
    {"salt": bytes(257)}, {"hash_name": "crc32"}, {"uuid": "nope"}, {"hash_offset": 100},
    {"hash_offset": -512}, {"data_blocks": -1},
])
def test_params_reject(kwargs: dict[str, object]) -> None:
    with pytest.raises(ParameterError):
        VerityParams(**kwargs)  # type: ignore[arg-type]


def test_kernel_table_kata_shape() -> None:
    # Kata's expectation (hypervisor_test.go): one 4096-byte block gives
    # "0 8 verity 1 /dev/vda1 /dev/vda2 4096 4096 1 0 sha256 <root> <salt>".
    root = bytes(range(32))
    result = VerityResult.describe(VerityParams(salt=b"\xde\xf0", superblock=False, data_blocks=1), root)
    table = kernel_table(result, "/dev/vda1", "/dev/vda2")
    assert table == f"0 8 verity 1 /dev/vda1 /dev/vda2 4096 4096 1 0 sha256 {root.hex()} def0"
    assert dm_mod_create(table) == f'dm-mod.create="dm-verity,,,ro,{table}"'
    empty = VerityResult.describe(VerityParams(salt=b"", superblock=False, data_blocks=2), root)
    assert kernel_table(empty, "253:0", "253:1", optional=["ignore_zero_blocks"]).endswith(
        f"{root.hex()} - 1 ignore_zero_blocks")


@pytest.mark.parametrize(("dev", "opt"), [("vda1", ()), ("/dev/vda1 x", ()), ("/dev/vda1", ("a b",)),
                                          ("/dev/vda1", ("x,y",))])
def test_kernel_table_rejects_injection(dev: str, opt: tuple[str, ...]) -> None:
    result = VerityResult.describe(VerityParams(salt=b"", superblock=False, data_blocks=1), bytes(32))
    with pytest.raises(ParameterError):
        kernel_table(result, dev, "/dev/vda2", optional=opt)


def test_dm_mod_create_rejects_separators() -> None:
    with pytest.raises(ParameterError):
        dm_mod_create("0 8 verity 1 /dev/a /dev/b 4096 4096 1 0 sha256 00 -;evil")
    with pytest.raises(ParameterError):
        dm_mod_create("0 8 verity", name="bad,name")


def test_workers_give_identical_trees(tmp_path: Path) -> None:
    size = PARALLEL_MIN_BYTES + 3 * 4096 + 123  # above the threshold, not chunk aligned
    data = tmp_path / "data"
    with open(data, "wb") as f:
        f.write(os.urandom(size))
    params = VerityParams(salt=SALT_S, uuid="12345678-1234-1234-1234-123456789abc")
    one = format_hash_tree(data, tmp_path / "h1", params, workers=1)
    two = format_hash_tree(data, tmp_path / "h2", params, workers=2, chunk_bytes=1 << 20)
    assert one.root_hash == two.root_hash
    assert (tmp_path / "h1").read_bytes() == (tmp_path / "h2").read_bytes()
    verify(data, tmp_path / "h2", one.root_hash, workers=2)


def test_workers_with_other_threads_running(tmp_path: Path) -> None:
    # fork is unsafe once other threads run; the pipeline must switch to forkserver and still work.
    data = tmp_path / "data"
    with open(data, "wb") as f:
        f.write(os.urandom(PARALLEL_MIN_BYTES))
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        two = format_hash_tree(data, tmp_path / "h2", VerityParams(salt=b""), workers=2)
    finally:
        stop.set()
        thread.join()
    one = format_hash_tree(data, tmp_path / "h1", VerityParams(salt=b"", uuid=two.uuid), workers=1)
    assert one.root_hash == two.root_hash
    assert (tmp_path / "h1").read_bytes() == (tmp_path / "h2").read_bytes()


def test_failed_format_leaves_no_file(tmp_path: Path) -> None:
    (tmp_path / "data").write_bytes(data16())
    with pytest.raises(DeviceError):
        format_hash_tree(tmp_path / "data", tmp_path / "hash", VerityParams(data_blocks=17))
    with pytest.raises(ParameterError):
        format_hash_tree(tmp_path / "data", tmp_path / "hash", VerityParams(data_block_size=1 << 19))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_truncated_hash_file_is_a_device_error(tmp_path: Path) -> None:
    (tmp_path / "data").write_bytes(data16() * 20)
    result = format_hash_tree(tmp_path / "data", tmp_path / "hash", VerityParams(salt=SALT_S))
    with open(tmp_path / "hash", "r+b") as f:
        f.truncate(result.hash_end - 1)
    with pytest.raises(DeviceError):
        verify(tmp_path / "data", tmp_path / "hash", result.root_hash)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 300), st.sampled_from(["sha1", "sha256", "sha512"]), st.sampled_from([0, 1]),
       st.binary(max_size=40))
def test_verify_accepts_own_trees_and_rejects_other_roots(
        tmp_path_factory: pytest.TempPathFactory, blocks: int, hash_name: str, hash_type: int,
        salt: bytes) -> None:
    tmp = tmp_path_factory.mktemp("own")
    (tmp / "data").write_bytes(os.urandom(blocks * 512))
    params = VerityParams(hash_name=hash_name, hash_type=hash_type, salt=salt, data_block_size=512,
                          hash_block_size=1024)
    result = format_hash_tree(tmp / "data", tmp / "hash", params, workers=1)
    verify(tmp / "data", tmp / "hash", result.root_hash)
    other = bytes([result.root_hash[0] ^ 1]) + result.root_hash[1:]
    with pytest.raises(Exception, match="root hash mismatch"):
        verify(tmp / "data", tmp / "hash", other)


def test_result_json_and_describe_round_trip(tmp_path: Path) -> None:
    (tmp_path / "data").write_bytes(data16())
    params = VerityParams(salt=SALT_S, superblock=False)
    result = format_hash_tree(tmp_path / "data", tmp_path / "hash", params)
    doc = result.to_json()
    assert doc["root_hash"] == "895fe938075b5140d130de8f6c40d6577899d7f589eaa8fe3d860923e2475ec5"
    assert (doc["salt"], doc["data_blocks"], doc["hash_start_block"]) == (SALT_S.hex(), 16, 0)
    assert doc["uuid"] is None
    again = VerityResult.describe(result.params, result.root_hash)
    assert again.geometry == result.geometry
    with pytest.raises(ParameterError):
        VerityResult.describe(VerityParams(salt=None, data_blocks=16), result.root_hash)
    with pytest.raises(ParameterError):
        VerityResult.describe(result.params, result.root_hash[:-1])
