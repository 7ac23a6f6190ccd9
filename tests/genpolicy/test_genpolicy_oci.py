"""Images for the generator from a real OCI layout through the ``oci`` package: config, users from the
layers (whiteouts respected), per-layer cache, and a tampered blob refused."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from genpolicy import Generator, ImageError, Settings, parse_documents
from genpolicy.oci_source import OciImageSource
from oci import Digest, LayoutWriter
from oci import mediatypes as mt
from tests.support import shared_path

KATA = shared_path("kata-policy", "kata")


def layer(files: dict[str, bytes]) -> tuple[bytes, str, Digest]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    plain = raw.getvalue()
    return (
        gzip.compress(plain, mtime=0),
        mt.OCI_LAYER_GZIP,
        Digest("sha256", hashlib.sha256(plain).hexdigest()),
    )


def build_layout(root: Path) -> str:
    writer = LayoutWriter(root)
    desc = writer.add_image(
        [
            layer(
                {
                    "etc/passwd": b"root:x:0:0::/root:/bin/sh\nold:x:7:7::/:/bin/sh\n",
                    "etc/group": b"root:x:0:\n",
                }
            ),
            layer({"etc/.wh.passwd": b""}),
            layer(
                {
                    "./etc/passwd": b"root:x:0:0::/root:/bin/sh\napp:x:1000:2000::/app:/bin/sh\n",
                    "bin/app": b"\x7fELF",
                }
            ),
        ],
        config={
            "User": "app",
            "Entrypoint": ["/bin/app"],
            "Cmd": ["--serve"],
            "Env": ["PATH=/bin"],
            "WorkingDir": "/app",
        },
    )
    writer.finish()
    return f"registry.example/app@{desc.digest}"


def test_layout_image_through_the_generator(tmp_path: Path) -> None:
    ref = build_layout(tmp_path / "layout")
    source = OciImageSource(tmp_path / "cache", layout=tmp_path / "layout")
    info = source.resolve(ref)
    assert info.digest == ref.split("@")[1]
    assert info.config["Entrypoint"] == ["/bin/app"]
    assert "app:x:1000:2000" in info.passwd and "old:" not in info.passwd  # later layer wins
    assert source.layers_scanned == 3
    pod = f"""apiVersion: v1
kind: Pod
metadata: {{name: app}}
spec:
  securityContext: {{runAsUser: 1000, runAsGroup: 2000}}
  containers: [{{name: app, image: "{ref}", securityContext: {{runAsUser: 1000, runAsGroup: 2000}}}}]
"""
    settings = Settings.load(KATA / "genpolicy-settings.json")
    pause = OciImageSource(tmp_path / "cache", layout=tmp_path / "layout")

    class Both:
        def resolve(self, reference: str) -> object:
            if reference == settings.cluster_config["pause_container_image"]:
                return pause.resolve(ref)
            return source.resolve(reference)

    generator = Generator(settings, (KATA / "rules.rego").read_text(), Both())  # type: ignore[arg-type]
    (result,) = generator.generate(parse_documents(pod))
    process = result.policy_data["containers"][1]["OCI"]["Process"]
    assert process["Args"] == ["/bin/app", "--serve"] and process["Cwd"] == "/app"
    assert process["User"]["UID"] == 1000 and process["User"]["GID"] == 2000
    again = OciImageSource(tmp_path / "cache", layout=tmp_path / "layout")
    assert again.resolve(ref).passwd == info.passwd and again.layers_scanned == 0  # warm: no layer read


def test_tampered_blob_is_refused_naming_the_image(tmp_path: Path) -> None:
    ref = build_layout(tmp_path / "layout")
    blobs = sorted((tmp_path / "layout" / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    biggest = blobs[-1]
    data = bytearray(biggest.read_bytes())
    data[len(data) // 2] ^= 1
    biggest.write_bytes(bytes(data))
    with pytest.raises(ImageError) as info:
        OciImageSource(tmp_path / "cache", layout=tmp_path / "layout").resolve(ref)
    assert ref in str(info.value)
    assert not (tmp_path / "cache" / "blobs" / "blobs" / "sha256" / biggest.name).exists()  # never cached


def test_tag_only_reference_is_refused(tmp_path: Path) -> None:
    build_layout(tmp_path / "layout")
    with pytest.raises(ImageError, match="has no digest"):
        OciImageSource(tmp_path / "cache", layout=tmp_path / "layout").resolve("registry.example/app:latest")
