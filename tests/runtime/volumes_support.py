"""What the CRI volume tests share: Debian's containerd with our shim in host-EROFS mode, disk files
behind loop devices, the project's initializer image imported into containerd, an allow-all policy
that pins the layers of the images the pods run, and the secure-pv initializer container."""

from __future__ import annotations

import contextlib
import json
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from attestation import initdata as initdata_format
from tools.vm.containerd import (
    IMAGE_NAME,
    Containerd,
    busybox_image_archive,
    containerd_missing,
    host_erofs_config,
    pinned_policy,
    running_containerd,
    shim_processes,
)
from tools.vm.cri.client import CriClient

__all__ = [
    "INITIALIZER_IMAGE",
    "SECOND_IMAGE",
    "SECRET_PATH",
    "cri_node",
    "initializer_initdata",
    "loop_device",
    "sandbox_config",
    "secure_pv_container",
    "wait_exec",
]

SECOND_IMAGE = "docker.io/library/cc-second:1"
INITIALIZER_IMAGE = "docker.io/library/cc-initializer:initializer"
SECRET_PATH = "/contrast/secrets/workload-secret-seed"
REPO = Path(__file__).resolve().parents[2]


def _merged(*policies: str) -> str:
    """One allow-all policy pinning the layers of every given pinned_policy."""
    containers: list[object] = []
    for text in policies:
        line = next(x for x in text.splitlines() if x.startswith("policy_data := "))
        containers += json.loads(line.removeprefix("policy_data := "))["containers"]
    head = policies[0].split("policy_data := ")[0]
    return head + "policy_data := " + json.dumps({"containers": containers}) + "\n"


@contextlib.contextmanager
def loop_device(disk: Path) -> Iterator[str]:
    out = subprocess.run(["losetup", "--find", "--show", str(disk)], capture_output=True, text=True,
                         check=True, timeout=30)
    dev = out.stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], capture_output=True, check=False, timeout=30)


@contextlib.contextmanager
def cri_node(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest,
             name: str) -> Iterator[tuple[Containerd, CriClient, str, Path]]:
    """containerd (host EROFS) with the busybox image and a second one of another layer imported;
    (containerd, CRI client, initdata annotation pinning both, work directory). Skips without
    containerd or QEMU; at the end every shim must be gone."""
    from tools.vm.guest_tests import pod_image_dir
    from tools.vm.qemu import qemu_available

    reason = containerd_missing() or qemu_available()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp(name)
    config = host_erofs_config(pod_image_dir(request.config), work)
    with running_containerd(cri_runtime_config=config) as ctd:
        ns_ctd = Containerd(ctd.base, ctd.proc, ctd.env, namespace="k8s.io")
        # a second image (one more file, so another layer) under its own name, then the sandbox image
        second = ctd.base / "second.tar"
        second_digest = busybox_image_archive(second, {"etc/second": b"from the second image\n"})
        imported = ns_ctd.ctr("image", "import", str(second))
        assert imported.returncode == 0, imported.stderr
        tagged = ns_ctd.ctr("image", "tag", IMAGE_NAME, SECOND_IMAGE)
        assert tagged.returncode == 0, tagged.stderr
        archive = ctd.base / "image.tar"
        digest = busybox_image_archive(archive)
        imported = ns_ctd.ctr("image", "import", str(archive))
        assert imported.returncode == 0, imported.stderr
        policy = _merged(pinned_policy(ns_ctd, digest, work / "layers"),
                         pinned_policy(ns_ctd, second_digest, work / "layers"))
        toml = initdata_format.encode(initdata_format.Initdata("0.1.0", "sha256", {"policy.rego": policy}))
        client = CriClient(ctd.socket)
        try:
            client.wait_ready()
            yield ctd, client, initdata_format.encode_annotation(toml), work
        finally:
            client.close()
        rundir = Path(ctd.env["CONTRAST_CC_RUN_DIR"])
        deadline = time.monotonic() + 30
        while shim_processes(rundir) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert shim_processes(rundir) == []


def sandbox_config(pb: Any, name: str, logs: Path, initdata: str) -> Any:
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="default", attempt=0),
        hostname=name,
        log_directory=str(logs),
        annotations={initdata_format.ANNOTATION: initdata},
        linux=pb.LinuxPodSandboxConfig(
            security_context=pb.LinuxSandboxSecurityContext(namespace_options=pb.NamespaceOption(network=pb.NODE))
        ),
    )


def _layer_pins(ctd: Containerd, manifest_digest: str, cache: Path) -> list[dict[str, str]]:
    """Every layer of the image pinned (erofs image built as the shim builds it)."""
    from image.layers import build_layer_image
    from oci import LayerSource

    manifest = json.loads(ctd.ctr("content", "get", manifest_digest).stdout)
    pins = []
    for i, layer in enumerate(manifest["layers"]):
        blob = cache.parent / f"pv-layer-{i}.blob"
        blob.write_bytes(subprocess.run(["ctr", "--address", str(ctd.socket), "--namespace", ctd.namespace,
                                         "content", "get", layer["digest"]], capture_output=True, check=True,
                                        timeout=120).stdout)
        pins.append(dict(build_layer_image(LayerSource(layer["digest"], "gzip", blob), cache).pin()))
    return pins


def _initializer_image(ctd: Containerd, work: Path) -> str:
    """The project's initializer image (with cryptsetup) imported into containerd; its manifest digest."""
    from image.containers.build import IMAGES, build_layout

    layout = work / "initializer-layout"
    (desc,) = build_layout(REPO, layout, [s for s in IMAGES if s.name == "initializer"]).values()
    archive = work / "initializer.tar"
    with tarfile.open(archive, "w") as tar:
        for p in sorted(layout.rglob("*")):
            tar.add(p, arcname=str(p.relative_to(layout)), recursive=False)
    ns = Containerd(ctd.base, ctd.proc, ctd.env, namespace="k8s.io")
    out = ns.ctr("image", "import", "--base-name", INITIALIZER_IMAGE.rsplit(":", 1)[0], str(archive))
    assert out.returncode == 0, out.stderr
    return str(desc.digest)


def initializer_initdata(ctd: Containerd, work: Path) -> str:
    """The initializer image imported (once per containerd); an initdata annotation whose allow-all
    policy pins the layers of busybox and the initializer image."""
    from tools.vm.pod import RPC_NAMES

    ns = Containerd(ctd.base, ctd.proc, ctd.env, namespace="k8s.io")
    listed = ns.ctr("image", "ls").stdout.splitlines()
    digest = next((line.split()[2] for line in listed if line.startswith(INITIALIZER_IMAGE + " ")),
                  None) or _initializer_image(ctd, work)
    busybox = next(line.split()[2] for line in listed if line.startswith(IMAGE_NAME + " "))
    pins = _layer_pins(ns, busybox, work / "layers") + _layer_pins(ns, digest, work / "layers")
    policy = "\n".join(["package agent_policy", "", *(f"default {n} := true" for n in RPC_NAMES), "",
                        "policy_data := " + json.dumps({"containers": [{"erofs_layers": pins}]}), ""])
    toml = initdata_format.encode(initdata_format.Initdata("0.1.0", "sha256", {"policy.rego": policy}))
    return initdata_format.encode_annotation(toml)


def secure_pv_container(pb: Any, name: str, host_dev: str, secret_file: Path, *, state: Path | None = None,
                        propagation: int | None = None) -> Any:
    """Contrast's secure-pv initializer: privileged, the volume at /dev/csi0, the workload secret as
    a file; with ``state`` the host directory mounted at /state (``propagation``: a CRI
    MountPropagation, Contrast's is Bidirectional), else /state is the container's own directory."""
    mounts = [pb.Mount(container_path=SECRET_PATH, host_path=str(secret_file), readonly=True)]
    if state is not None:
        mode = pb.PROPAGATION_BIDIRECTIONAL if propagation is None else propagation
        mounts.append(pb.Mount(container_path="/state", host_path=str(state), propagation=mode))
    return pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name),
        image=pb.ImageSpec(image=INITIALIZER_IMAGE),
        command=["python3", "-m", "initializer", "cryptsetup", "-d", "/dev/csi0", "-m", "/state",
                 "--secret-file", SECRET_PATH, "--done-file", "/done"],
        log_path=f"{name}.log",
        devices=[pb.Device(container_path="/dev/csi0", host_path=host_dev, permissions="rwm")],
        mounts=mounts,
        linux=pb.LinuxContainerConfig(security_context=pb.LinuxContainerSecurityContext(privileged=True)),
    )


def wait_exec(client: CriClient, cid: str, cmd: list[str], within: float = 180) -> Any:
    """ExecSync ``cmd`` in ``cid`` until it exits 0 (or ``within`` seconds); a container that exited
    gives exit_code -1."""
    pb = client.pb
    deadline = time.monotonic() + within
    while True:
        st = client.call("ContainerStatus", pb.ContainerStatusRequest(container_id=cid)).status
        if st.state == pb.CONTAINER_EXITED:
            return pb.ExecSyncResponse(exit_code=-1, stderr=f"container exited {st.exit_code}".encode())
        ex = client.call("ExecSync", pb.ExecSyncRequest(container_id=cid, cmd=cmd, timeout=60))
        if ex.exit_code == 0 or time.monotonic() > deadline:
            return ex
        time.sleep(1)
