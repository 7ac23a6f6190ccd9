"""guest.backend.guestpull without a network: storage checks and the registry settings file."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest

from guest.backend.guestpull import (
    GuestPullError,
    load_registry_config,
    parse_registry_config,
    parse_storage,
    pull_guest_image,
)
from guest.protocols import agent_pb2
from oci import Digest, ReferenceError, RegistryConfig

CID = "a" * 64
IMAGE = f"registry.example/app@sha256:{'1' * 64}"


def storage(**kw: object) -> agent_pb2.Storage:
    meta = {"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.image-name": IMAGE}
    fields: dict[str, object] = {
        "driver": "image_guest_pull", "source": IMAGE, "fstype": "overlay",
        "mount_point": f"/run/kata-containers/{CID}/rootfs",
        "driver_options": [f"image_guest_pull={json.dumps({'metadata': meta})}"]}
    fields.update(kw)
    return agent_pb2.Storage(**fields)  # type: ignore[arg-type]


def test_valid_storage() -> None:
    req = parse_storage(storage(), CID)
    assert req.digest == Digest("sha256", "1" * 64) and req.reference.domain == "registry.example"


BAD = {
    "driver": storage(driver="local"),
    "mount_point": storage(mount_point=f"/run/kata-containers/{'b' * 64}/rootfs"),
    "options": storage(options=["ro"]),
    "driver_options": storage(driver_options=[]),
    "two options": storage(driver_options=["image_guest_pull={}", "image_guest_pull={}"]),
    "not json": storage(driver_options=["image_guest_pull={"]),
    "no metadata": storage(driver_options=['image_guest_pull={"metadata": 1}']),
    "no image name": storage(driver_options=['image_guest_pull={"metadata": {}}']),
    "sandbox": storage(driver_options=['image_guest_pull={"metadata": {"io.kubernetes.cri.container-type": '
                                       '"sandbox"}}']),
    "other digest": storage(driver_options=['image_guest_pull={"metadata": {"io.kubernetes.cri.image-name": '
                                            f'"registry.example/app@sha256:{"2" * 64}"}}}}']),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_storages(case: str) -> None:
    with pytest.raises(GuestPullError):
        parse_storage(BAD[case], CID)


def test_tag_and_bad_container_id() -> None:
    with pytest.raises(ReferenceError, match="is required"):
        parse_storage(storage(source="registry.example/app:latest"), CID)
    with pytest.raises(Exception, match="container_id"):
        parse_storage(storage(mount_point="/run/kata-containers/../rootfs"), "../x")


def test_registry_config_and_precedence(tmp_path: Path) -> None:
    auth = base64.b64encode(b"u2:p2").decode()
    measured, unmeasured = tmp_path / "m.toml", tmp_path / "u.toml"
    unmeasured.write_text('[registries."r.example"]\nusername = "u1"\npassword = "p1"\n')
    cfg = load_registry_config(measured, unmeasured)
    assert cfg.credentials["r.example"].username == "u1"
    measured.write_text(f'[registries."r.example:5000"]\nauth = "{auth}"\ninsecure = true\n')
    cfg = load_registry_config(measured, unmeasured)  # measured wins, whole file
    assert cfg.credentials_for("r.example:5000") is not None
    assert cfg.credentials_for("r.example:5000").password == "p2"  # type: ignore[union-attr]
    assert "r.example" not in cfg.credentials and cfg.allows_plain_http("r.example:5000")
    assert "p2" not in repr(cfg)
    assert load_registry_config(tmp_path / "none", tmp_path / "none2") == RegistryConfig()


@pytest.mark.parametrize("text", ['[registries."h"]\nauth = "%%%"\n', '[registries."h"]\nauth = "dXNlcg=="\n',
                                  '[registries."h"]\nusername = "u"\n', '[registries."h"]\ntoken = "t"\n',
                                  "registries = 1\n", "[[["])
def test_bad_registry_config_never_echoes_secrets(text: str) -> None:
    with pytest.raises(GuestPullError) as exc:
        parse_registry_config(text, "cfg")
    assert "dXNlcg" not in str(exc.value)


def test_pull_refuses_before_any_network(tmp_path: Path) -> None:
    with pytest.raises(GuestPullError):
        asyncio.run(pull_guest_image(storage(driver="blk"), CID, cache_dir=tmp_path / "c",
                                     rootfs_parent=tmp_path, registry_config=RegistryConfig()))
    assert sorted(p.name for p in tmp_path.iterdir()) == []
