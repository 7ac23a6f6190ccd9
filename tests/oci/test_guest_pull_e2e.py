"""End to end on the host: a busybox image built offline, pushed to Debian's docker-registry in a
network namespace, pulled by digest through guest.backend.guestpull and unpacked; tampered blobs,
substituted manifests and traversal layers fail closed; a second pull fetches no layer again."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from redirector import Redirector
from tarbuild import Entry, compress, tar_bytes
from token_server import TokenServer

from guest.backend.guestpull import GuestPullError, parse_registry_config, pull_guest_image
from guest.protocols import agent_pb2
from oci import (
    BlobMismatchError,
    Digest,
    LayoutWriter,
    Platform,
    RegistryConfig,
    RegistryError,
    TransportPolicyError,
    UnpackError,
)
from oci import mediatypes as mt
from tools.vm.registry import Registry, start_registry, unavailable

pytestmark = [pytest.mark.root, pytest.mark.interop,
              pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))]

BUSYBOX = Path("/bin/busybox")
CID = "c" * 64


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    try:
        yield reg
    finally:
        reg.close()


def busybox_layers() -> list[tuple[bytes, str, Digest]]:
    base = tar_bytes([
        Entry("bin", tarfile.DIRTYPE, mode=0o755),
        Entry("bin/busybox", data=BUSYBOX.read_bytes(), mode=0o755),
        Entry("bin/sh", tarfile.SYMTYPE, linkname="busybox"), Entry("bin/echo", tarfile.LNKTYPE,
                                                                     linkname="bin/busybox"),
        Entry("etc", tarfile.DIRTYPE, mode=0o755), Entry("etc/passwd", data=b"root:x:0:0:root:/:/bin/sh\n"),
        Entry("etc/obsolete", data=b"removed by the upper layer"), Entry("tmp", tarfile.DIRTYPE, mode=0o1777),
    ])
    upper = tar_bytes([Entry("etc", tarfile.DIRTYPE, mode=0o755), Entry("etc/.wh.obsolete"),
                       Entry("etc/motd", data=b"pulled by digest\n", uid=1000, gid=1000, mode=0o640)])
    return [(compress(base, "gzip"), mt.OCI_LAYER_GZIP, Digest.of(base)),
            (compress(upper, "zstd"), mt.OCI_LAYER_ZSTD, Digest.of(upper))]


def build_image(root: Path, tag: str, layers: list[tuple[bytes, str, Digest]]) -> Digest:
    w = LayoutWriter(root)
    amd64 = w.add_image(layers, config={"Entrypoint": ["/bin/sh"]})
    decoy_layer = tar_bytes([Entry("arm64-only", data=b"wrong platform")])
    arm64 = w.add_image([(decoy_layer, mt.OCI_LAYER, Digest.of(decoy_layer))],
                        platform=Platform("linux", "arm64"))
    index = w.add_index([arm64, amd64], tag=tag)
    w.finish([index])
    return index.digest


def storage(image: str, cid: str = CID) -> agent_pb2.Storage:
    meta = {"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.image-name": image}
    return agent_pb2.Storage(driver="image_guest_pull", source=image, fstype="overlay",
                             mount_point=f"/run/kata-containers/{cid}/rootfs",
                             driver_options=[f"image_guest_pull={json.dumps({'metadata': meta})}"])


def pull(reg: Registry, image: str, bundle: Path, cache: Path, *, cid: str = CID,
         config: RegistryConfig | None = None) -> Path:
    bundle.mkdir(parents=True, exist_ok=True)
    cfg = config or RegistryConfig(ca_certs={reg.hostport: reg.ca_pem})
    return asyncio.run(pull_guest_image(storage(image, cid), cid, cache_dir=cache, rootfs_parent=bundle,
                                        registry_config=cfg))


def blob_gets(reg: Registry, repo: str, digest: object) -> int:
    path = f"/v2/{repo}/blobs/{digest}"
    return sum(1 for m, p, s in reg.requests() if m == "GET" and p == path and s == 200)


def test_busybox_pulled_by_digest_runs(registry: Registry, tmp_path: Path) -> None:
    layers = busybox_layers()
    digest = build_image(tmp_path / "layout", "v1", layers)
    registry.push(tmp_path / "layout", "test/busybox", "v1", index=True)
    image = f"{registry.hostport}/test/busybox@{digest}"
    cache = tmp_path / "cache"
    rootfs = pull(registry, image, tmp_path / "bundle1", cache)
    assert rootfs == tmp_path / "bundle1" / "rootfs"
    assert (rootfs / "bin/busybox").read_bytes() == BUSYBOX.read_bytes()
    assert os.readlink(rootfs / "bin/sh") == "busybox"
    assert os.stat(rootfs / "bin/echo").st_ino == os.stat(rootfs / "bin/busybox").st_ino
    assert not (rootfs / "etc/obsolete").exists() and not (rootfs / "arm64-only").exists()
    motd = os.stat(rootfs / "etc/motd")
    assert (motd.st_uid, motd.st_gid, motd.st_mode & 0o7777) == (1000, 1000, 0o640)
    out = subprocess.run(["chroot", str(rootfs), "/bin/sh", "-c", "/bin/busybox cat /etc/motd; echo exit=$?"],
                         capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout == "pulled by digest\nexit=0\n"
    # a second container of the same image: every layer fetched exactly once
    second = pull(registry, image, tmp_path / "bundle2", cache, cid="d" * 64)
    assert (second / "etc/motd").read_bytes() == b"pulled by digest\n"
    for data, _, _ in layers:
        assert blob_gets(registry, "test/busybox", Digest.of(data)) == 1


def test_concurrent_pulls_fetch_each_layer_once(registry: Registry, tmp_path: Path) -> None:
    big = compress(tar_bytes([Entry("concurrent", data=os.urandom(1 << 20))]), "gzip")
    layers = [*busybox_layers()[1:], (big, mt.OCI_LAYER_GZIP, Digest.of(b""))]
    layers[1] = (layers[1][0], layers[1][1], Digest.of(b"unchecked diff id"))
    digest = build_image(tmp_path / "layout", "conc", layers)
    registry.push(tmp_path / "layout", "test/conc", "conc", index=True)
    image = f"{registry.hostport}/test/conc@{digest}"
    cfg = RegistryConfig(ca_certs={registry.hostport: registry.ca_pem})

    async def both() -> list[Path]:
        jobs = []
        for i, cid in enumerate(("e" * 64, "f" * 64)):
            (tmp_path / f"b{i}").mkdir()
            jobs.append(pull_guest_image(storage(image, cid), cid, cache_dir=tmp_path / "cache",
                                         rootfs_parent=tmp_path / f"b{i}", registry_config=cfg))
        return list(await asyncio.gather(*jobs))

    roots = asyncio.run(both())
    assert all((r / "concurrent").stat().st_size == 1 << 20 for r in roots)
    for data, _, _ in layers:
        assert blob_gets(registry, "test/conc", Digest.of(data)) == 1


def test_one_wrong_byte_in_a_layer_fails_closed(registry: Registry, tmp_path: Path) -> None:
    layers = busybox_layers()
    layers[1] = (compress(tar_bytes([Entry("tampered-target", data=b"x" * 4096)]), "zstd"), mt.OCI_LAYER_ZSTD,
                 Digest.of(b"-"))
    digest = build_image(tmp_path / "layout", "tamper", layers)
    registry.push(tmp_path / "layout", "test/tamper", "tamper", index=True)
    target = Digest.of(layers[1][0])
    blob = registry.blob_file(str(target))
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    with pytest.raises(BlobMismatchError, match=str(target)) as exc:
        pull(registry, f"{registry.hostport}/test/tamper@{digest}", tmp_path / "bundle", tmp_path / "cache")
    assert exc.value.digest == str(target)
    assert not (tmp_path / "bundle" / "rootfs").exists() and os.listdir(tmp_path / "bundle") == []
    assert not (tmp_path / "cache/blobs/sha256" / target.hex).exists()


def test_manifest_for_another_digest_fails_closed(registry: Registry, tmp_path: Path) -> None:
    # content of its own: the registry's blob store is shared by all repositories of the module
    unique = tar_bytes([Entry("unique", data=os.urandom(64))])
    digest = build_image(tmp_path / "a", "a", [*busybox_layers(), (unique, mt.OCI_LAYER, Digest.of(unique))])
    registry.push(tmp_path / "a", "test/swap", "a", index=True)
    other = build_image(tmp_path / "b", "b", busybox_layers()[:1])
    registry.push(tmp_path / "b", "test/swap", "b", index=True)
    # the registry now answers requests for `digest` with the bytes of `other`
    registry.blob_file(str(digest)).write_bytes(registry.blob_file(str(other)).read_bytes())
    with pytest.raises(BlobMismatchError, match="another digest") as exc:
        pull(registry, f"{registry.hostport}/test/swap@{digest}", tmp_path / "bundle", tmp_path / "cache")
    assert exc.value.digest == str(digest)
    assert os.listdir(tmp_path / "bundle") == []


def test_traversal_layer_fails_closed(registry: Registry, tmp_path: Path) -> None:
    evil = tar_bytes([Entry("etc", tarfile.DIRTYPE), Entry("../../escaped", data=b"owned")])
    layers = [*busybox_layers()[:1], (compress(evil, "gzip"), mt.OCI_LAYER_GZIP, Digest.of(evil))]
    digest = build_image(tmp_path / "layout", "evil", layers)
    registry.push(tmp_path / "layout", "test/evil", "evil", index=True)
    with pytest.raises(UnpackError, match=r"\.\./\.\./escaped") as exc:
        pull(registry, f"{registry.hostport}/test/evil@{digest}", tmp_path / "bundle", tmp_path / "cache")
    assert exc.value.layer == str(Digest.of(layers[1][0]))
    assert os.listdir(tmp_path / "bundle") == []
    assert not (tmp_path / "escaped").exists()


def test_tag_without_digest_and_disagreeing_annotation_fetch_nothing(registry: Registry,
                                                                     tmp_path: Path) -> None:
    before = len(registry.requests())
    with pytest.raises(Exception, match=r"digest .*is required"):
        pull(registry, f"{registry.hostport}/test/busybox:v1", tmp_path / "bundle", tmp_path / "cache")
    s = storage(f"{registry.hostport}/test/busybox@sha256:{'1' * 64}")
    s.driver_options[0] = s.driver_options[0].replace("1" * 64, "2" * 64)
    with pytest.raises(GuestPullError, match=r"io\.kubernetes\.cri\.image-name"):
        asyncio.run(pull_guest_image(s, CID, cache_dir=tmp_path / "cache", rootfs_parent=tmp_path,
                                     registry_config=RegistryConfig()))
    assert len(registry.requests()) == before


def test_tls_is_required_and_verified(registry: Registry, tmp_path: Path) -> None:
    image = f"{registry.hostport}/test/busybox@sha256:{'1' * 64}"
    # no CA for the host: the certificate does not verify, and plain HTTP is not tried for it
    with pytest.raises(RegistryError, match="TLS connection failed"):
        pull(registry, image, tmp_path / "bundle", tmp_path / "cache", config=RegistryConfig())
    assert os.listdir(tmp_path / "bundle") == []


def test_token_auth_with_credentials_from_the_config(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    password = "s3cret-pull-password"
    tokens = TokenServer(tmp_path, "puller", password)
    reg = start_registry(tmp_path / "reg", "t", auth=tokens.registry_auth_yaml(), subnet=204)
    try:
        digest = build_image(tmp_path / "layout", "p", busybox_layers())
        reg.push(tmp_path / "layout", "test/private", "p", index=True, creds=f"puller:{password}")
        image = f"{reg.hostport}/test/private@{digest}"
        pem = reg.ca_pem.replace("\n", "\\n")
        table = f'[registries."{reg.hostport}"]\nusername = "puller"\nca = "{pem}"\n'
        good = parse_registry_config(f'{table}password = "{password}"\n', "test")
        caplog.set_level("DEBUG")
        rootfs = pull(reg, image, tmp_path / "b1", tmp_path / "cache", config=good)
        assert (rootfs / "etc/motd").is_file()
        assert password not in caplog.text and base64_of(f"puller:{password}") not in caplog.text
        # anonymous and wrong credentials: the token server refuses, nothing is pulled
        for cfg in (RegistryConfig(ca_certs={reg.hostport: reg.ca_pem}),
                    parse_registry_config(f'{table}password = "wrong"\n', "test")):
            with pytest.raises(RegistryError, match="token request answered HTTP 401") as exc:
                pull(reg, image, tmp_path / "b2", tmp_path / "cache2", config=cfg)
            assert password not in str(exc.value)
            assert os.listdir(tmp_path / "b2") == []
        assert tokens.seen_auth.count(None) >= 1  # the anonymous attempt sent no credentials
    finally:
        reg.close()
        tokens.close()


def base64_of(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _bcrypt(password: str) -> str:
    import warnings

    with warnings.catch_warnings():  # crypt is deprecated; only the test's htpasswd file needs it
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))


def test_basic_auth(tmp_path: Path) -> None:
    password = "basic-pw"
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"puller:{_bcrypt(password)}\n")
    reg = start_registry(tmp_path / "reg", "b", subnet=205,
                         auth=f"auth:\n  htpasswd:\n    realm: basic-realm\n    path: {htpasswd}\n")
    try:
        digest = build_image(tmp_path / "layout", "p", busybox_layers())
        reg.push(tmp_path / "layout", "test/basic", "p", index=True, creds=f"puller:{password}")
        image = f"{reg.hostport}/test/basic@{digest}"
        pem = reg.ca_pem.replace("\n", "\\n")
        table = f'[registries."{reg.hostport}"]\nca = "{pem}"\n'
        good = parse_registry_config(f'{table}auth = "{base64_of("puller:" + password)}"\n', "test")
        assert (pull(reg, image, tmp_path / "b1", tmp_path / "c1", config=good) / "etc/motd").is_file()
        with pytest.raises(RegistryError, match="no usable credentials"):
            pull(reg, image, tmp_path / "b2", tmp_path / "c2")
        assert os.listdir(tmp_path / "b2") == []
    finally:
        reg.close()


def test_redirects_follow_the_transport_rule(registry: Registry, tmp_path: Path) -> None:
    digest = build_image(tmp_path / "layout", "r", busybox_layers())
    registry.push(tmp_path / "layout", "test/redir", "r", index=True)
    # a loopback front (plain HTTP allowed) redirecting to the TLS registry on another host
    front = Redirector(f"https://{registry.hostport}")
    try:
        cfg = RegistryConfig(ca_certs={registry.hostport: registry.ca_pem})
        rootfs = pull(registry, f"{front.hostport}/test/redir@{digest}", tmp_path / "b1", tmp_path / "c1",
                      config=cfg)
        assert (rootfs / "etc/motd").read_bytes() == b"pulled by digest\n"
    finally:
        front.close()
    # a redirect to plain HTTP on a host that must use TLS is refused
    downgrade = Redirector(f"http://{registry.hostport}")
    try:
        with pytest.raises(TransportPolicyError, match=registry.hostport):
            pull(registry, f"{downgrade.hostport}/test/redir@{digest}", tmp_path / "b2", tmp_path / "c2")
        assert os.listdir(tmp_path / "b2") == []
    finally:
        downgrade.close()
