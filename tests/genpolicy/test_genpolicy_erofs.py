"""Host EROFS mode: the policy pins every layer image's dm-verity root hash, complete and in order.

The layer images and their pins come from image.layers (what the node's shim attaches); the requests
are kata's own allowed CreateContainer cases with the guest-pull storage replaced by one
erofs.multi-layer storage per layer, as the runtime sends them in this mode."""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest
from test_genpolicy_kata import CASES, KATA, canonical_input

from genpolicy import Generator, ImageInfo, Settings, StaticImageSource, parse_documents
from guest.policy.engine import AgentPolicy
from image.layers import LayerImage, build_layer_image
from oci.unpack import LayerSource

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mkfs.erofs") is None, reason="layer images need root and erofs-utils"
)
DIRECTORY = "createcontainer/security_context/fsgroup"


def layer(tmp: Path, name: str, files: dict[str, bytes]) -> LayerImage:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    blob = gzip.compress(raw.getvalue(), mtime=0)
    (tmp / name).write_bytes(blob)
    return build_layer_image(
        LayerSource("sha256:" + hashlib.sha256(blob).hexdigest(), "gzip", tmp / name), tmp / "layers"
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[LayerImage], list[LayerImage]]:
    tmp = tmp_path_factory.mktemp("erofs")
    app = [layer(tmp, "base", {"bin/pause": b"\x7fELF pause"}), layer(tmp, "top", {"etc/app": b"v1"})]
    other = [layer(tmp, "evil", {"etc/app": b"evil"})]
    settings = json.loads((KATA / "genpolicy-settings.json").read_text())
    settings["common"]["image_layer_verification"] = "host-erofs-dm-verity"
    settings["cluster_config"]["guest_pull"] = False
    pins = tuple(image.pin() for image in app)
    config = {"Entrypoint": ["/pause"], "User": "65535:65535"}
    images = StaticImageSource(
        {
            ref: ImageInfo(ref, "", config, erofs_layers=pins)
            for ref in (
                "mcr.microsoft.com/oss/kubernetes/pause:3.6",
                "registry.k8s.io/pause:3.6@sha256:3d380ca8864549e74af4b29c10f9cb0956236dfb01c40ca076fb6c37253234db",
            )
        }
    )
    generator = Generator(Settings.from_document(settings), (KATA / "rules.rego").read_text(), images)
    (result,) = generator.generate(parse_documents((CASES / DIRECTORY / "pod.yaml").read_text()))
    assert "allow_erofs_layers(p_container, i_storages)" in result.rego
    assert result.policy_data["containers"][1]["erofs_layers"] == [dict(p) for p in pins]
    return result.rego, app, other


def storage(image: LayerImage, device: str) -> dict[str, Any]:
    return {
        "driver": "erofs.multi-layer",
        "driver_options": [],
        "source": device,
        "fstype": "erofs",
        "options": ["ro", *image.options()],
        "mount_point": f"/run/kata-containers/layers/{image.roothash[:16]}",
        "fs_group": None,
        "shared": False,
    }


def decide_with_layers(rego: str, layers: list[dict[str, Any]]) -> bool:
    """kata's cases in order, the workload's guest pull replaced by ``layers``; the last decision."""
    policy = AgentPolicy()
    policy.set_policy(rego)
    decision = False
    for case in json.loads((CASES / DIRECTORY / "testcases.json").read_text()):
        request = copy.deepcopy(case["request"])
        if case["kind"] == "CreateContainerRequest":
            storages = [s for s in request.get("storages") or [] if s.get("driver") != "image_guest_pull"]
            request["storages"] = storages + layers
        decision = policy.evaluate(case["kind"], canonical_input(case["kind"], request)).allowed
        if case["kind"] == "CreateContainerRequest":
            return decision
    return decision


def test_pinned_layers_in_order_are_allowed(setup: tuple[str, list[LayerImage], list[LayerImage]]) -> None:
    rego, app, _ = setup
    assert decide_with_layers(rego, [storage(app[0], "/dev/vdb"), storage(app[1], "/dev/vdc")])


@pytest.mark.parametrize(
    "attack",
    [
        "missing layer",
        "reordered",
        "foreign layer",
        "extra layer",
        "hostile source",
        "verity off",
        "no layers",
    ],
)
def test_host_layer_attacks_are_denied(
    setup: tuple[str, list[LayerImage], list[LayerImage]], attack: str
) -> None:
    rego, app, other = setup
    good = [storage(app[0], "/dev/vdb"), storage(app[1], "/dev/vdc")]
    layers = {
        "missing layer": good[:1],
        "reordered": good[::-1],
        "foreign layer": [good[0], storage(other[0], "/dev/vdc")],
        "extra layer": [*good, storage(other[0], "/dev/vdd")],
        "hostile source": [good[0], {**good[1], "source": "/dev/vdc /dev/vdc 4096"}],
        "verity off": [good[0], {**good[1], "options": ["ro"]}],
        "no layers": [],
    }[attack]
    assert not decide_with_layers(rego, layers)
