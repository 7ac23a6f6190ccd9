"""Sans-IO parts: digests, references, manifests/indexes/configs, platform choice, auth challenges."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oci import (
    BlobCache,
    BlobMismatchError,
    Descriptor,
    Digest,
    DigestError,
    ImageFormatError,
    ImageIndex,
    ImageManifest,
    LayoutSource,
    LayoutWriter,
    Platform,
    PlatformError,
    Reference,
    ReferenceError,
    resolve_image,
)
from oci import mediatypes as mt
from oci.digest import DigestVerifier
from oci.manifest import parse_config, parse_manifest, select_platform
from oci.registry import RegistryConfig, parse_challenge

HEX = "a" * 64


def test_digest_grammar() -> None:
    assert str(Digest.parse(f"sha256:{HEX}")) == f"sha256:{HEX}"
    assert Digest.parse("sha512:" + "0" * 128).algorithm == "sha512"
    for bad in [f"sha256:{HEX.upper()}", f"sha256:{HEX}0", "sha256:" + "a" * 63, f"sha384:{'a' * 96}",
                f" sha256:{HEX}", f"sha256:{HEX}\n", f"sha256+b64:{HEX}", "sha256", "", f"SHA256:{HEX}"]:
        with pytest.raises(DigestError):
            Digest.parse(bad)


@given(st.binary(max_size=256))
def test_digest_of_matches_hashlib(data: bytes) -> None:
    d = Digest.of(data)
    assert d.hex == hashlib.sha256(data).hexdigest() and d.matches(data)
    assert Digest.parse(str(d)) == d
    d.verify(data, len(data))
    with pytest.raises(BlobMismatchError):
        d.verify(data + b"x")


@given(st.binary(min_size=1, max_size=200), st.integers(min_value=0, max_value=199))
def test_streaming_verifier_refuses_one_wrong_byte(data: bytes, pos: int) -> None:
    pos %= len(data)
    desc = Digest.of(data)
    v = DigestVerifier(desc, len(data))
    v.update(data)
    v.finish()
    tampered = data[:pos] + bytes([data[pos] ^ 1]) + data[pos + 1:]
    v = DigestVerifier(desc, len(data))
    v.update(tampered)
    with pytest.raises(BlobMismatchError, match="digest differs"):
        v.finish()
    v = DigestVerifier(desc, len(data))
    with pytest.raises(BlobMismatchError, match="more than"):
        v.update(data + b"x")


def test_references() -> None:
    r = Reference.parse(f"busybox:1.36@sha256:{HEX}")
    assert (r.domain, r.path, r.tag) == ("docker.io", "library/busybox", "1.36")
    assert r.api_host == "registry-1.docker.io"
    r = Reference.parse(f"127.0.0.1:5000/test/busybox@sha256:{HEX}")
    assert (r.domain, r.path, r.tag) == ("127.0.0.1:5000", "test/busybox", None)
    assert str(r) == f"127.0.0.1:5000/test/busybox@sha256:{HEX}"
    assert Reference.parse("localhost/x").domain == "localhost"
    assert Reference.parse("[::1]:5000/x:v").domain == "[::1]:5000"
    assert Reference.parse(f"ghcr.io/a/b:latest@sha256:{HEX}").require_digest() == Digest("sha256", HEX)
    with pytest.raises(ReferenceError, match=r"ghcr\.io/a/b:latest.*digest .* is required"):
        Reference.parse("ghcr.io/a/b:latest").require_digest()
    for bad in ["", "UPPER/x", "a//b", "x:", "x@sha256:abc", "x:bad tag", "-x", "a/b/../c", "x@" + HEX]:
        with pytest.raises(ReferenceError):
            Reference.parse(bad)


@given(st.from_regex(r"[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,2}", fullmatch=True),
       st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}", fullmatch=True)))
def test_reference_round_trip(path: str, tag: str | None) -> None:
    text = f"registry.example:443/{path}" + (f":{tag}" if tag else "") + f"@sha256:{HEX}"
    r = Reference.parse(text)
    assert str(r) == text and Reference.parse(str(r)) == r


def _desc(media: str, data: bytes = b"x", **kw: object) -> dict[str, object]:
    return {"mediaType": media, "digest": str(Digest.of(data)), "size": len(data), **kw}


def _manifest(media: str | None = mt.OCI_MANIFEST) -> bytes:
    doc: dict[str, object] = {"schemaVersion": 2, "config": _desc(mt.OCI_CONFIG),
                              "layers": [_desc(mt.OCI_LAYER_GZIP), _desc(mt.OCI_LAYER_ZSTD)]}
    if media:
        doc["mediaType"] = media
    return json.dumps(doc).encode()


def test_manifest_and_index_parsing() -> None:
    data = _manifest()
    m = parse_manifest(data, Digest.of(data), mt.OCI_MANIFEST)
    assert isinstance(m, ImageManifest) and len(m.layers) == 2 and m.config.size == 1
    assert isinstance(parse_manifest(_manifest(None), Digest.of(b""), None), ImageManifest)
    plat = {"os": "linux", "architecture": "arm64"}
    idx = json.dumps({"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST_LIST, "manifests": [
        _desc(mt.DOCKER_MANIFEST, b"1", platform=plat),
        _desc(mt.OCI_MANIFEST, b"att", platform={"os": "unknown", "architecture": "unknown"}),
        _desc(mt.DOCKER_MANIFEST, b"2", platform={"os": "linux", "architecture": "amd64", "variant": "v3"}),
    ]}).encode()
    index = parse_manifest(idx, Digest.of(idx), "application/json")
    assert isinstance(index, ImageIndex)
    assert select_platform(index).digest == Digest.of(b"2")
    with pytest.raises(PlatformError, match=r"linux/s390x .*linux/arm64"):
        select_platform(index, Platform("linux", "s390x"))


BAD_MANIFESTS = {
    "duplicate key": b'{"schemaVersion": 2, "schemaVersion": 2, "config": {}, "layers": []}',
    "schemaVersion": b'{"schemaVersion": 1, "layers": []}',
    "not a JSON": b"\xff",
    "expected an image index": json.dumps({"schemaVersion": 2, "mediaType": "text/plain",
                                           "layers": []}).encode(),
    "size must be": json.dumps({"schemaVersion": 2, "config": _desc(mt.OCI_CONFIG, size=-1),
                                "layers": []}).encode(),
    "invalid digest": json.dumps({"schemaVersion": 2, "config": _desc(mt.OCI_CONFIG, digest="md5:00"),
                                  "layers": []}).encode(),
    "external URLs": json.dumps({"schemaVersion": 2, "config": _desc(mt.OCI_CONFIG),
                                 "layers": [_desc(mt.OCI_LAYER, urls=["http://x"])]}).encode(),
    "expected one of": json.dumps({"schemaVersion": 2, "config": _desc(mt.OCI_CONFIG),
                                   "layers": [_desc(mt.DOCKER_FOREIGN_LAYER)]}).encode(),
    "must not carry": json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [],
                                  "layers": []}).encode(),
}


@pytest.mark.parametrize("problem", sorted(BAD_MANIFESTS))
def test_bad_manifests(problem: str) -> None:
    data = BAD_MANIFESTS[problem]
    with pytest.raises(ImageFormatError, match=problem):
        parse_manifest(data, Digest.of(data))


def test_descriptor_and_document_media_types_must_agree() -> None:
    data = _manifest(mt.DOCKER_MANIFEST)
    with pytest.raises(ImageFormatError, match="descriptor says"):
        parse_manifest(data, Digest.of(data), mt.OCI_MANIFEST)


def test_config_parsing() -> None:
    cfg = {"os": "linux", "architecture": "amd64", "config": {"Entrypoint": ["/bin/sh"], "Env": ["A=1"],
           "User": "1000:1000", "Volumes": {"/data": {}}},
           "rootfs": {"type": "layers", "diff_ids": [f"sha256:{HEX}"]}}
    data = json.dumps(cfg).encode()
    c = parse_config(data, Digest.of(data), 1)
    assert (c.entrypoint, c.env, c.user, c.volumes) == (("/bin/sh",), ("A=1",), "1000:1000", ("/data",))
    with pytest.raises(ImageFormatError, match="1 diff_ids for 2 manifest layers"):
        parse_config(data, Digest.of(data), 2)


def test_auth_challenges() -> None:
    assert parse_challenge('Bearer realm="https://auth.example/token",service="registry.example",'
                           'scope="repository:a/b:pull"') == ("bearer", {
                               "realm": "https://auth.example/token", "service": "registry.example",
                               "scope": "repository:a/b:pull"})
    assert parse_challenge('Basic realm="basic-realm"') == ("basic", {"realm": "basic-realm"})
    assert parse_challenge('bearer realm="a\\"b"')[1]["realm"] == 'a"b'


@given(st.text(max_size=100))
def test_challenge_parser_never_crashes(text: str) -> None:
    scheme, params = parse_challenge(text)
    assert isinstance(scheme, str) and isinstance(params, dict)


def test_plain_http_rule() -> None:
    cfg = RegistryConfig(insecure=frozenset({"10.0.0.1:5000"}))
    for host in ["localhost:5000", "127.0.0.1:5000", "127.8.9.10", "[::1]:5000", "10.0.0.1:5000"]:
        assert cfg.allows_plain_http(host), host
    for host in ["10.0.0.1:5001", "registry.example", "128.0.0.1:5000", "localhost.example"]:
        assert not cfg.allows_plain_http(host), host


def _image(root: Path, *, arch: str = "amd64") -> tuple[LayoutWriter, Descriptor]:
    w = LayoutWriter(root)
    layer = b"layer-bytes"
    m = w.add_image([(layer, mt.OCI_LAYER, Digest.of(layer))], platform=Platform("linux", arch))
    idx = w.add_index([m])
    w.finish([idx])
    return w, idx


def test_layout_resolve_and_config_platform_check(tmp_path: Path) -> None:
    _, idx = _image(tmp_path / "img")
    src = LayoutSource(tmp_path / "img")
    ref = Reference.parse(f"localhost/img@{idx.digest}")
    manifest, config = resolve_image(src, BlobCache(tmp_path / "cache"), ref)
    assert config.platform == Platform("linux", "amd64") and len(manifest.layers) == 1
    # an index that lies about the platform its manifest is for
    w = LayoutWriter(tmp_path / "liar")
    m = w.add_image([(b"l", mt.OCI_LAYER, Digest.of(b"l"))], platform=Platform("linux", "arm64"))
    lie = w.add_index([Descriptor(m.media_type, m.digest, m.size, Platform("linux", "amd64"))])
    with pytest.raises(PlatformError, match="linux/arm64"):
        resolve_image(LayoutSource(tmp_path / "liar"), BlobCache(tmp_path / "c2"),
                      Reference.parse(f"localhost/liar@{lie.digest}"))
