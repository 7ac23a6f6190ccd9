"""A containerd of our own for tests and benchmarks: temporary root, state and socket, in a network
namespace of its own (``unshare --net``), with this checkout's shim first on its PATH; an offline OCI
image (static busybox) to import, and the initdata policy that pins its layer for host-EROFS runs.

With ``cni=True`` the CRI plugin gives each pod a network namespace through Debian's
containernetworking-plugins (``/usr/lib/cni``: bridge + host-local, and loopback, which containerd
adds itself): the bridge, its gateway and every pod address live only in containerd's namespace.
``tools.vm.registry.containerd_registry`` starts a registry in that namespace that containerd and
the pods reach."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNTIME = "io.containerd.contrast-cc.v2"
SHIM = "containerd-shim-contrast-cc-v2"
BUSYBOX = Path("/bin/busybox")
IMAGE_NAME = "docker.io/library/cc-shim-test:1"
# A pause image like registry.k8s.io/pause (Entrypoint /pause, user 65535) on the same layer, so a pod
# VM booted with the sandbox image's layers (host EROFS) can run workloads of IMAGE_NAME.
PAUSE_IMAGE_NAME = "docker.io/library/cc-shim-pause:1"
PAUSE_SCRIPT = b"#!/bin/sh\ntrap 'exit 0' TERM INT\nwhile :; do sleep 3600 & wait $!; done\n"
CNI_BIN = Path("/usr/lib/cni")


def containerd_missing(*, cni: bool = False) -> str | None:
    if os.geteuid() != 0:
        return "needs root (containerd, network namespaces)"
    for tool in ("containerd", "ctr", "unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install containerd)"
    if cni and not all((CNI_BIN / p).is_file() for p in ("bridge", "host-local", "loopback")):
        return f"CNI plugins missing in {CNI_BIN} (apt-get install containernetworking-plugins)"
    return None


def pod_subnet() -> tuple[str, str]:
    """(pod subnet, an address outside it for services in containerd's namespace), from the pid so
    that two runs side by side never see the same numbers."""
    n = os.getpid() % 250
    return f"10.218.{n}.0/24", f"10.219.{n}.1"


def _blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def busybox_image_archive(
    path: Path,
    extra_files: Mapping[str, bytes] | None = None,
    *,
    pause: bool = False,
    name: str | None = None,
    extra_env: tuple[str, ...] = (),
) -> str:
    """An OCI archive with one layer (static busybox as /bin/sh and friends, a /pause script, plus
    ``extra_files``: path in the image → content, for an image of its own); its manifest digest.
    ``pause``: the image config of PAUSE_IMAGE_NAME (same layer) instead; ``name`` and ``extra_env``:
    another image of the same layer (a different config, so another digest)."""
    env = ["PATH=/bin", *extra_env]
    layer_raw = io.BytesIO()
    with tarfile.open(fileobj=layer_raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("bin", "tmp", "proc", "sys", "dev", "etc"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        data = BUSYBOX.read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for applet in ("sh", "echo", "sleep", "cat", "ls"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        info = tarfile.TarInfo("pause")
        info.size, info.mode = len(PAUSE_SCRIPT), 0o755
        tar.addfile(info, io.BytesIO(PAUSE_SCRIPT))
        for extra, content in sorted((extra_files or {}).items()):
            info = tarfile.TarInfo(extra)
            info.size, info.mode = len(content), 0o644
            tar.addfile(info, io.BytesIO(content))
    diff_id = "sha256:" + hashlib.sha256(layer_raw.getvalue()).hexdigest()
    layer_digest, layer = _blob(gzip.compress(layer_raw.getvalue(), mtime=0))
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": (
                {"Env": env, "Entrypoint": ["/pause"], "User": "65535:65535"}
                if pause
                else {"Env": env, "Cmd": ["/bin/sleep", "3600"]}
            ),
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()
    config_digest, _ = _blob(config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest,
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    manifest_digest, _ = _blob(manifest)
    image_name = name or (PAUSE_IMAGE_NAME if pause else IMAGE_NAME)
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": len(manifest),
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": image_name,
                        "org.opencontainers.image.ref.name": image_name.rsplit(":", 1)[1],
                    },
                }
            ],
        }
    )
    with tarfile.open(path, "w") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", index.encode())
        for digest, data in ((layer_digest, layer), (config_digest, config), (manifest_digest, manifest)):
            add("blobs/sha256/" + digest.removeprefix("sha256:"), data)
    return manifest_digest


@dataclass
class Containerd:
    base: Path
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    namespace: str = "default"
    cni_subnet: str | None = None  # the pods' subnet with cni=True

    @property
    def socket(self) -> Path:
        return self.base / "c.sock"

    @property
    def netns(self) -> Path:
        """containerd's network namespace (``unshare`` execs containerd: same pid)."""
        return Path(f"/proc/{self.proc.pid}/ns/net")

    def in_netns(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a command in containerd's network namespace."""
        return subprocess.run(
            ["nsenter", f"--net={self.netns}", "--", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def trust_registry(self, hostport: str, ca_file: Path) -> None:
        """Let the CRI plugin pull from ``https://hostport`` with that CA (hosts.toml, read per pull)."""
        d = self.base / "certs.d" / hostport
        d.mkdir(parents=True, exist_ok=True)
        (d / "hosts.toml").write_text(
            f'server = "https://{hostport}"\n[host."https://{hostport}"]\n'
            f'  capabilities = ["pull", "resolve"]\n  ca = "{ca_file}"\n'
        )

    def ctr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", "--address", str(self.socket), "--namespace", self.namespace, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def log(self) -> str:
        return (self.base / "containerd.log").read_text(errors="replace")


@contextlib.contextmanager
def running_containerd(
    cri_runtime_config: Path | None = None,
    *,
    cni: bool = False,
    sandbox_image: str = IMAGE_NAME,
    shim_env: Mapping[str, str] | None = None,
) -> Iterator[Containerd]:
    """Without ``cri_runtime_config`` the CRI plugin is off; with it, CRI serves on the same socket with
    the runtime handler ``contrast-cc`` (our shim, that ConfigPath, kata's pod annotations passed
    through) and this module's busybox image as the sandbox image. Without ``cni`` only host-network
    pods work; with it a pod gets a netns with ``eth0`` on a bridge in containerd's namespace
    (``Containerd.cni_subnet``, default route via the bridge). Registries: ``trust_registry``.
    ``shim_env``: more environment for containerd and so for every shim it starts (a test playing a
    hostile host puts a modified runtime first on the shim's PYTHONPATH)."""
    if cni and cri_runtime_config is None:
        raise ValueError("cni=True needs the CRI plugin (cri_runtime_config)")
    base = Path(tempfile.mkdtemp(prefix=f"cg-ctd-{os.getpid()}-", dir="/tmp"))
    bindir = base / "bin"
    bindir.mkdir()
    launcher = bindir / SHIM
    launcher.write_text(f'#!/bin/sh\nexec {sys.executable} -P -m runtime "$@"\n')
    launcher.chmod(0o755)
    rundir = base / "run"
    config = base / "config.toml"
    disabled = [
        "io.containerd.snapshotter.v1.btrfs",
        "io.containerd.snapshotter.v1.zfs",
        "io.containerd.snapshotter.v1.devmapper",
        "io.containerd.snapshotter.v1.aufs",
    ]
    if cri_runtime_config is None:
        disabled.append("io.containerd.grpc.v1.cri")
    text = (
        f'version = 2\nroot = "{base}/root"\nstate = "{base}/state"\n'
        f"disabled_plugins = {json.dumps(disabled)}\n"
        f'[grpc]\n  address = "{base}/c.sock"\n[ttrpc]\n  address = "{base}/c.sock.ttrpc"\n'
        f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{base}/opt"\n'
    )
    subnet: str | None = None
    if cri_runtime_config is not None:
        (base / "cni-conf").mkdir()
        (base / "certs.d").mkdir()
        cni_bin = base / "cni-bin"
        if cni:
            cni_bin = CNI_BIN
            subnet, _ = pod_subnet()
            (base / "cni-conf" / "10-cg-pods.conflist").write_text(cni_conflist(base, subnet))
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        text += (
            f'[{cri}]\n  sandbox_image = "{sandbox_image}"\n  disable_apparmor = true\n'
            f'[{cri}.cni]\n  bin_dir = "{cni_bin}"\n  conf_dir = "{base}/cni-conf"\n'
            f'[{cri}.registry]\n  config_path = "{base}/certs.d"\n'
            f'[{cri}.containerd]\n  snapshotter = "overlayfs"\n  default_runtime_name = "runc"\n'
            f'[{cri}.containerd.runtimes.runc]\n  runtime_type = "io.containerd.runc.v2"\n'
            f'[{cri}.containerd.runtimes.contrast-cc]\n  runtime_type = "{RUNTIME}"\n'
            '  pod_annotations = ["io.katacontainers.*", "contrast.edgeless.systems/image-store-size"]\n'
            # as Kata's install: a privileged container gets no host devices, only its own
            "  privileged_without_host_devices = true\n"
            f'[{cri}.containerd.runtimes.contrast-cc.options]\n  ConfigPath = "{cri_runtime_config}"\n'
        )
    config.write_text(text)
    env = {
        **os.environ,
        "PATH": f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "CONTRAST_CC_RUN_DIR": str(rundir),
        "PYTHONPATH": str(REPO),
        **(shim_env or {}),
    }
    env.pop("CONTRAST_CC_CONFIG", None)
    logf = open(base / "containerd.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        ["unshare", "--net", "--", "containerd", "--config", str(config)],
        stdout=logf,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    ctd = Containerd(base, proc, env, cni_subnet=subnet)
    try:
        deadline = time.monotonic() + 60
        while ctd.ctr("version", timeout=10).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"containerd did not start:\n{ctd.log()[-3000:]}")
            time.sleep(0.2)
        yield ctd
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(20)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        logf.close()
        subprocess.run(["umount", "-R", "-l", str(base / "root")], capture_output=True, check=False)
        subprocess.run(["umount", "-R", "-l", str(base / "state")], capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)


def cni_conflist(base: Path, subnet: str) -> str:
    """bridge + host-local: the gateway is the bridge's first address, a default route through it;
    the IPAM state stays in ``base`` (not the host's /var/lib/cni/networks)."""
    pid = os.getpid()
    plugins = [
        {
            "type": "bridge",
            "bridge": f"cgbr{pid}"[:15],
            "isGateway": True,
            "ipMasq": False,
            "hairpinMode": True,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": subnet}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": str(base / "cni-ipam"),
            },
        }
    ]
    return json.dumps({"cniVersion": "1.0.0", "name": f"cg-pods-{pid}", "plugins": plugins}, indent=1)


def shim_processes(rundir: Path) -> list[int]:
    """Pids whose command line names this run directory (our shim daemons and their QEMUs)."""
    out = []
    needle = str(rundir).encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if needle in (entry / "cmdline").read_bytes():
                    out.append(int(entry.name))
    return out


def pinned_policy(
    ctd: Containerd, manifest_digest: str, cache: Path, *, execs: list[list[str]] | None = None
) -> str:
    """Every request allowed (ExecProcess only for the command lines in ``execs`` when given); the
    image's layer pinned (its erofs image built the way the shim builds it, from the blob in
    containerd's content store, into ``cache``)."""
    from image.layers import build_layer_image
    from oci import LayerSource
    from tools.vm.pod import RPC_NAMES

    manifest = json.loads(ctd.ctr("content", "get", manifest_digest).stdout)
    layer = manifest["layers"][0]
    blob = cache.parent / "layer.blob"
    blob.write_bytes(
        subprocess.run(
            [
                "ctr",
                "--address",
                str(ctd.socket),
                "--namespace",
                ctd.namespace,
                "content",
                "get",
                layer["digest"],
            ],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    )
    pin = build_layer_image(LayerSource(layer["digest"], "gzip", blob), cache).pin()
    lines = [
        "package agent_policy",
        "",
        *(f"default {n} := {str(execs is None or n != 'ExecProcessRequest').lower()}" for n in RPC_NAMES),
        *(f"ExecProcessRequest if {{ input.process.Args == {json.dumps(a)} }}" for a in execs or []),
        "",
        "policy_data := " + json.dumps({"containers": [{"erofs_layers": [pin]}]}),
        "",
    ]
    return "\n".join(lines)


def _emptydir_args(emptydir_mode: str, emptydir_size_mib: int) -> list[str]:
    return ["--emptydir-mode", emptydir_mode, "--emptydir-size-mib", str(emptydir_size_mib)]


def guest_pull_config(image: Path, work: Path, *, emptydir_mode: str = "block-encrypted",
                      emptydir_size_mib: int = 0) -> Path:
    """``python -m image runtime-config --image-mode guest-pull`` for ``image``."""
    config = work / "rt-guest-pull.toml"
    made = subprocess.run(
        [sys.executable, "-m", "image", "runtime-config", "--image", str(image), "--out", str(config),
         "--image-mode", "guest-pull", *_emptydir_args(emptydir_mode, emptydir_size_mib)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    if made.returncode != 0:
        raise RuntimeError(made.stderr)
    return config


def host_erofs_config(image: Path, work: Path, *, emptydir_mode: str = "block-encrypted",
                      emptydir_size_mib: int = 0) -> Path:
    """``python -m image runtime-config`` for ``image`` with the layer cache in ``work``; disk emptyDirs
    as encrypted disks of the pod VM (the default, Kata's for CoCo) or ``shared-fs`` (copied in)."""
    config = work / "rt.toml"
    made = subprocess.run(
        [sys.executable, "-m", "image", "runtime-config", "--image", str(image), "--out", str(config),
         *_emptydir_args(emptydir_mode, emptydir_size_mib)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    if made.returncode != 0:
        raise RuntimeError(made.stderr)
    text = config.read_text().replace(
        'mode = "host-erofs"', f'mode = "host-erofs"\nlayer_cache = "{work / "layers"}"'
    )
    config.write_text(text)
    return config
