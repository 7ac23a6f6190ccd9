"""attestation.initdata against Contrast's initdata vectors, plus round-trip properties."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kata_testdata import INITDATA_VECTORS

from attestation import initdata
from attestation.initdata import Initdata, InitdataError

VECTORS: dict[str, Any] = json.loads(INITDATA_VECTORS.read_text())


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [c["id"] for c in cases]


@pytest.mark.parametrize("case", VECTORS["parse_cases"], ids=_ids(VECTORS["parse_cases"]))
def test_parse(case: dict[str, Any]) -> None:
    raw = case["toml"].encode()
    if case["expect_error_substring"]:
        with pytest.raises(InitdataError, match=case["expect_error_substring"]):
            initdata.parse(raw)
        return
    parsed = initdata.parse(raw)
    assert parsed.algorithm == case["expected_algorithm_after_parse"]
    assert parsed.version == case["expected_version"]
    assert sorted(parsed.data) == case["expected_data_keys"]
    assert initdata.digest(raw).hex() == case["digest_hex_computed_here"]


@pytest.mark.parametrize("case", VECTORS["encode_cases"], ids=_ids(VECTORS["encode_cases"]))
def test_encode(case: dict[str, Any]) -> None:
    value = Initdata(case["version"], case["algorithm"], case["data"] or {})
    if case.get("expect_error_substring"):
        with pytest.raises(InitdataError, match=case["expect_error_substring"]):
            initdata.encode(value)
        return
    raw = initdata.encode(value)
    for sub in case["expected_substrings"]:
        assert sub in raw.decode()
    assert initdata.parse(raw) == value
    assert initdata.decode_annotation(initdata.encode_annotation(raw)) == raw


@pytest.mark.parametrize("case", VECTORS["go_toml_serialisation_computed_here"]["cases"])
def test_encode_matches_go_toml_bytes(case: dict[str, Any]) -> None:
    inp = case["input"]
    raw = initdata.encode(Initdata(inp["version"], inp["algorithm"], inp["data"] or {}))
    assert raw.decode() == case["toml"]
    assert initdata.digest(raw).hex() == case["sha256_hex"]


@pytest.mark.parametrize("case", VECTORS["device_cases"], ids=_ids(VECTORS["device_cases"]))
def test_device(case: dict[str, Any]) -> None:
    image = bytes.fromhex(case["device_hex"])
    if case.get("expect_error"):
        expected = case["expect_error"].split(" (")[0]
        with pytest.raises(InitdataError, match=expected):
            initdata.decode_device(image)
        return
    raw = initdata.decode_device(image)
    assert raw.decode() == case["expected_toml"]
    assert initdata.digest(raw).hex() == case["expected_digest_sha256_hex"]


def test_encode_device_layout() -> None:
    raw = b"version = '0.1.0'\nalgorithm = 'sha256'\n"
    image = initdata.encode_device(raw)
    assert len(image) % 512 == 0
    assert image[:8] == b"initdata"
    assert initdata.decode_device(image) == raw
    with pytest.raises(InitdataError, match="wrong magic"):
        initdata.decode_device(image, magic=b"imgpullr")
    with pytest.raises(InitdataError, match="invalid magic"):
        initdata.decode_device(image, magic=b"short")


def test_gzip_bomb_is_bounded() -> None:
    import gzip
    import struct

    blob = gzip.compress(b"\0" * (initdata.MAX_TOML_SIZE + 1))
    image = b"initdata" + struct.pack("<Q", len(blob)) + blob
    with pytest.raises(InitdataError, match="too large"):
        initdata.decode_device(image)


def test_platform_digest() -> None:
    d = bytes(range(64))
    assert initdata.platform_digest(d[:32], initdata.TDX_MRCONFIGID_SIZE) == d[:32] + b"\0" * 16
    assert initdata.platform_digest(d, initdata.SNP_HOST_DATA_SIZE) == d[:32]


_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_text, _text, max_size=5), st.sampled_from(sorted(initdata.ALGORITHMS)))
def test_encode_parse_round_trip(data: dict[str, str], algorithm: str) -> None:
    value = Initdata("0.1.0", algorithm, data)
    raw = initdata.encode(value)
    assert initdata.parse(raw) == value
    assert initdata.decode_device(initdata.encode_device(raw)) == raw


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_images_fail_typed(image: bytes) -> None:
    try:
        raw = initdata.decode_device(b"initdata" + image)
    except InitdataError:
        return
    with contextlib.suppress(InitdataError):
        initdata.parse(raw)
