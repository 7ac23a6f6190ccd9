"""Pod networking through containerd's CRI plugin and CNI, with our shim and TCG pod VMs.

containerd runs in a network namespace of its own (``tools.vm.containerd``, ``cni=True``): Debian's
bridge + host-local plugins give each pod a netns with ``eth0`` on a bridge there; a TLS registry
(``tools.vm.registry.containerd_registry``) listens in the same namespace, trusted by the CRI plugin.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tools.vm.containerd import Containerd, busybox_image_archive, containerd_missing, running_containerd
from tools.vm.cri.client import CriClient
from tools.vm.registry import containerd_registry, unavailable


def _wait_cri(client: CriClient) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            client.call("Version", client.pb.VersionRequest(), timeout=10)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@pytest.mark.root
def test_cri_pulls_by_digest_from_the_registry_in_containerds_namespace(tmp_path: Path) -> None:
    reason = containerd_missing(cni=True) or unavailable()
    if reason:
        pytest.skip(reason)
    config = tmp_path / "unused.toml"  # no pod runs here: the handler's configuration is never read
    config.write_text("")
    with running_containerd(cri_runtime_config=config, cni=True) as ctd:
        assert ctd.cni_subnet is not None
        archive = tmp_path / "image.tar"
        digest = busybox_image_archive(archive)
        with containerd_registry(ctd, tmp_path / "reg") as reg:
            reg.push_archive(archive, "test/busybox", "1")
            client = CriClient(ctd.socket)
            try:
                _wait_cri(client)
                ref = f"{reg.hostport}/test/busybox@{digest}"
                spec = client.pb.ImageSpec(image=ref)
                pulled = client.call("PullImage", client.pb.PullImageRequest(image=spec))
            finally:
                client.close()
            assert pulled.image_ref.startswith("sha256:")
            assert ("GET", f"/v2/test/busybox/manifests/{digest}", 200) in reg.requests()
        k8s = Containerd(ctd.base, ctd.proc, ctd.env, namespace="k8s.io")
        listed = k8s.ctr("image", "ls", "-q").stdout.split()
        assert f"{reg.hostport}/test/busybox@{digest}" in listed
