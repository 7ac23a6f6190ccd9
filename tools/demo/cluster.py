"""The real demo: a whole confidential deployment on this machine (``python -m tools.demo``).

containerd (temporary root, its own network namespace, CNI bridge) runs every pod in a pod VM through our
shim in guest-pull mode; Debian's docker-registry inside that namespace serves our images by digest; a
small cluster DNS maps Services to pod addresses; a kubelet-like driver (tools.kube) runs the pods of the
generated YAML through containerd's CRI API. The data owner's CLI (`contrast generate`, `set`, `verify`)
runs on the host and reaches the Coordinator's pod through the namespace. Then the host attacks.

Everything made is recorded in the state file (tools.demo.state) as it is made; the run removes it all at
the end, on failure and on Ctrl-C, unless ``--keep``; then ``python -m tools.demo down`` does.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from common.files import atomic_write

from .errors import StepFailedError
from .state import State, stop_pods, teardown
from .steps import Steps
from .timing import PodPhases, TimedCri

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "demo"
KATA = REPO.parent / "shared" / "testdata" / "kata-policy" / "kata"  # Kata's rules.rego and settings
PLACEHOLDER = re.compile(r"localhost:5000/contrast/([a-z-]+)@sha256:0{64}")
GREETING = "hello from the store, over mTLS"
OCI_VERSION = "1.0.2-dev"
POD_TIMEOUT = 600.0  # a pod VM boots and pulls under TCG on a loaded machine: generous, but bounded


CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE",
)  # capability numbers 0..40, linux/capability.h


def node_capabilities() -> set[str]:
    """The capability bounding set of this process, which the containerd it starts inherits."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            mask = int(line.split()[1], 16)
            return {f"CAP_{n}" for i, n in enumerate(CAPABILITIES) if mask >> i & 1}
    return {f"CAP_{n}" for n in CAPABILITIES}


def _tail(text: str, n: int = 1200) -> str:
    return text[-n:].strip()


class NetnsRunner:
    """Commands and sockets on the host side, seen from inside the demo's network namespace."""

    def __init__(self, netns: Path) -> None:
        self.netns = netns

    def run(self, argv: list[str], *, timeout: float = 300, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nsenter", f"--net={self.netns}", "--", *argv], capture_output=True,
                              text=True, timeout=timeout, env=env, cwd=cwd, check=False)

    def connect(self, address: str, port: int, timeout: float = 10) -> socket.socket:
        """A TCP connection made from inside the namespace (setns on a helper thread only)."""
        import ctypes

        box: list[socket.socket | BaseException] = []

        def dial() -> None:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(self.netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, 0x40000000) != 0:
                    box.append(OSError(ctypes.get_errno(), "setns"))
                    return
            finally:
                os.close(fd)
            try:
                box.append(socket.create_connection((address, port), timeout=timeout))
            except OSError as exc:
                box.append(exc)

        t = threading.Thread(target=dial, name="netns-dial")
        t.start()
        t.join()
        result = box[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def http(self, address: str, port: int, method: str, path: str, body: bytes = b"",
             timeout: float = 30) -> tuple[int, bytes]:
        sock = self.connect(address, port, timeout)
        with sock:
            sock.settimeout(timeout)
            head = (f"{method} {path} HTTP/1.0\r\nHost: {address}\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n")
            sock.sendall(head.encode() + body)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        status_line, _, rest = data.partition(b"\r\n")
        parts = status_line.split()
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise StepFailedError(f"{address}:{port}: no HTTP reply to {method} {path}: {data[:80]!r}")
        return int(parts[1]), rest.partition(b"\r\n\r\n")[2]


class Demo:
    def __init__(self, steps: Steps, state: State, *, kata: Path, keep: bool) -> None:
        self.steps = steps
        self.state = state
        self.kata = kata
        self.keep = keep
        self.stack = contextlib.ExitStack()
        self.work = Path(tempfile.mkdtemp(prefix=f"cgdemo-{os.getpid()}-", dir="/tmp"))
        state.record.work = str(self.work)
        state.directory(self.work)
        state.marker(self.work)
        self.owner = self.work / "owner"
        self.owner.mkdir()
        self.deploy = self.work / "deploy"
        self.refs: dict[str, str] = {}
        self.layout = Path()
        self.pod_image = self.work / "pod-image"
        self.pause_digest = ""
        self.ctd: Any = None
        self.reg: Any = None
        self.net: NetnsRunner | None = None
        self.kubelet: Any = None
        self.pods: dict[str, Any] = {}
        self.records = self.work / "dns.json"
        self.timings: dict[str, float] = {}
        self.phases: dict[str, PodPhases] = {}
        self._last_refusal = ""
        self.cri: TimedCri

    # -- the narrative ------------------------------------------------------------------------------

    def run(self) -> None:
        s = self.steps
        s.run("images", "Images: the pod-VM image and the OCI images of our parts (reproducible, cached)",
              self.images)
        s.run("containerd", "containerd in a new network namespace (CNI bridge) with the contrast-cc shim, "
              "guest-pull mode", self.containerd, needs=["images"])
        s.run("registry", "docker-registry inside that namespace; images pushed and referenced by digest",
              self.registry, needs=["containerd"])
        s.run("generate", "Data owner: contrast generate on the Coordinator's and the app's YAML",
              self.generate, needs=["registry"])
        s.run("coordinator", "The Coordinator in its own pod VM, from its generated YAML", self.coordinator,
              needs=["generate"])
        s.run("set", "contrast set: the manifest to the attested Coordinator", self.set_manifest,
              needs=["coordinator"])
        s.run("verify", "contrast verify: the Coordinator serves exactly our manifest", self.verify,
              needs=["set"])
        s.run("pods", "store and frontend pods (initializer, mesh sidecar, app) through the CRI",
              self.app_pods, needs=["verify"])
        s.run("certs", "The Initializers received mesh certificates from the Coordinator", self.certs,
              needs=["pods"])
        s.run("mesh", "frontend -> store over mTLS through the mesh proxies", self.mesh, needs=["certs"])
        s.run("attack-exec", "Host attack: exec into the frontend's container", self.attack_exec,
              needs=["pods"])
        s.run("attack-changed-yaml", "Host attack: a pod whose YAML was changed after generation",
              self.attack_changed_yaml, needs=["verify"])
        s.run("attack-image-byte", "Host attack: one byte of an image layer changed in the registry",
              self.attack_image_byte, needs=["verify"])
        s.run("attack-unlisted-pod", "Host attack: a pod whose policy is not in the manifest asks for a "
              "mesh certificate", self.attack_unlisted_pod, needs=["verify"])
        s.run("attack-plaintext", "Host attack: plaintext to the store's mesh port", self.attack_plaintext,
              needs=["pods"])

    def close(self) -> None:
        """Stop everything (pods first, then the harnesses) unless --keep."""
        if self.keep:
            return
        for pod in list(self.pods.values()):
            with contextlib.suppress(Exception):
                pod.stop()
                self.state.forget_sandbox(pod.sandbox_id)
        self.stack.close()

    # -- set-up -------------------------------------------------------------------------------------

    def images(self) -> str:
        from .images import container_images, pod_vm_image, with_pause_image

        t0 = time.monotonic()
        _, vm_cached = pod_vm_image(REPO, self.pod_image)
        t_vm = time.monotonic() - t0
        built = container_images(REPO, self.work / "containers.log")
        self.layout = self.work / "layout"
        self.pause_digest = with_pause_image(built.layout, self.layout)
        desc = json.loads((self.pod_image / "image.json").read_text())
        root = str(desc.get("verity", {}).get("root_hash", desc.get("root_hash", "?")))[:16]
        names = ", ".join(f"{n} {d[7:19]}" for n, d in sorted(built.digests.items()))
        return (f"pod-VM image {'from cache' if vm_cached else 'built'} in {t_vm:.1f} s (root hash {root}…); "
                f"containers {'from cache' if built.cached else 'built'}: {names}")

    def containerd(self) -> str:
        from tools.vm.containerd import IMAGE_NAME, Containerd, containerd_missing, running_containerd

        from .images import pause_archive

        reason = containerd_missing(cni=True)
        if reason:
            raise StepFailedError(reason)
        config = self.work / "runtime.toml"
        made = subprocess.run([sys.executable, "-m", "image", "runtime-config", "--image",
                               str(self.pod_image), "--out", str(config), "--image-mode", "guest-pull"],
                              cwd=REPO,
                              capture_output=True, text=True, timeout=120, check=False)
        if made.returncode != 0:
            raise StepFailedError(f"python -m image runtime-config failed: {_tail(made.stderr)}")
        # Guest pull of a whole image under TCG takes longer than Kata's 60 s default.
        text = re.sub(r"create_container_timeout = \d+", "create_container_timeout = 300", config.read_text())
        config.write_text(text)
        ctd = self.stack.enter_context(running_containerd(config, cni=True))
        self.state.process(ctd.proc.pid, "containerd", group=True)
        self.state.directory(ctd.base)
        self.state.marker(ctd.base)
        self.ctd = ctd
        self.state.cri(ctd.socket, ctd.netns)
        self.net = NetnsRunner(ctd.netns)
        # CRI's sandbox image: containerd builds the pause container's spec from its config (process,
        # user), which the policy pins from the same pause image (the pod VM runs its own pause).
        archive = self.work / "sandbox-image.tar"
        pause_archive(archive, IMAGE_NAME)
        imported = Containerd(ctd.base, ctd.proc, ctd.env, namespace="k8s.io").ctr("image", "import",
                                                                                   str(archive))
        if imported.returncode != 0:
            raise StepFailedError(f"importing the sandbox image failed: {_tail(imported.stderr)}")
        return (f"containerd pid {ctd.proc.pid}, netns {ctd.netns}, pod subnet {ctd.cni_subnet}, "
                f"runtime handler contrast-cc (image mode guest-pull), root {ctd.base}")

    def registry(self) -> str:
        from tools.vm.registry import containerd_registry, unavailable

        reason = unavailable()
        if reason:
            raise StepFailedError(reason)
        reg = self.stack.enter_context(containerd_registry(self.ctd, self.work / "registry"))
        self.state.process(reg.proc.pid, "docker-registry")
        self.reg = reg
        digests = json.loads((self.layout / "images.json").read_text())  # our five, not the pause
        for name, digest in sorted(digests.items()):
            reg.push(self.layout, f"contrast/{name}", name, index=False)
            self.refs[name] = f"{reg.hostport}/contrast/{name}@{digest}"
        self.refs["pause"] = f"{reg.hostport}/contrast/pause@{self.pause_digest}"
        self._start_dns()
        return f"registry https://{reg.hostport} (TLS, demo CA); " + ", ".join(
            f"{n}@{d[7:19]}…" for n, d in sorted(digests.items()))

    def _start_dns(self) -> None:
        assert self.reg is not None and self.net is not None
        atomic_write(self.records, b"{}", mode=0o644)
        log = (self.work / "dns.log").open("ab")
        proc = subprocess.Popen(
            ["nsenter", f"--net={self.net.netns}", "--", sys.executable, "-m", "tools.demo.dns",
             "--listen", self.reg.address, "--records", str(self.records)],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        log.close()
        self.state.process(proc.pid, "cluster DNS", group=True)
        self.stack.callback(_stop, proc)

    def _dns(self, service: str, ip: str) -> None:
        records = json.loads(self.records.read_text())
        records[service] = ip
        atomic_write(self.records, json.dumps(records).encode(), mode=0o644)

    # -- the data owner -----------------------------------------------------------------------------

    def _render(self, source: Path, dest: Path) -> None:
        def ref(m: re.Match[str]) -> str:
            if m.group(1) not in self.refs:
                raise StepFailedError(f"{source}: image {m.group(1)} is none of ours {sorted(self.refs)}")
            return self.refs[m.group(1)]

        dest.write_text(PLACEHOLDER.sub(ref, source.read_text()))

    def _simulated_root_secret(self) -> Path:
        """The simulated AMD root (keys included: it signs the pods' reports) as the Secret the YAML
        mounts."""
        from attestation.testing import load_or_create_root

        root = self.work / "simulated-amd"
        load_or_create_root(root)
        data = {p.name: base64.b64encode(p.read_bytes()).decode()
                for p in sorted(root.iterdir()) if p.is_file()}
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "simulated-amd",
                                                                       "namespace": "default"},
                  "type": "Opaque", "data": data}
        path = self.deploy / "simulated-amd.yaml"
        path.write_text(yaml.safe_dump(secret, sort_keys=True))
        return path

    def _puller_config(self) -> Path:
        assert self.reg is not None
        ca = self.reg.ca_pem.replace("\n", "\\n")
        path = self.work / "imagepuller.toml"
        path.write_text(f'[registries."{self.reg.hostport}"]\nca = "{ca}"\n')
        return path

    def _settings(self) -> Path:
        """Kata's genpolicy settings plus a drop-in stating what is particular to this node, as an operator
        states it for genpolicy: the pause image (the Kata-shaped one of tools.demo.images: the pod VM
        runs its own pause, but the pause container's policy comes from an image config, and containerd
        builds its spec from the same image), Debian 12's containerd 1.6 (runtime-spec 1.0.2-dev; the
        sandbox's resolv.conf bound "rbind, ro"), its state directory (bundle paths), the kubelet's log
        root; and, as Contrast's settings, container logs readable. emptyDirs stay Kata's block-encrypted
        (a disk of the pod VM each, encrypted with a key born there).
        Kata's rules and our generator are unchanged."""
        settings = self.work / "settings"
        if settings.exists():
            return settings
        (settings / "genpolicy-settings.d").mkdir(parents=True)
        shutil.copyfile(self.kata / "genpolicy-settings.json", settings / "genpolicy-settings.json")
        bundle = f"{self.ctd.base}/state/io.containerd.runtime.v2.task/k8s.io/$(bundle-id)"
        logs = (f"^{re.escape(str(self.work / 'kubelet' / 'logs'))}/$(sandbox-namespace)_$(sandbox-name)_"
                "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
        anno = "/Annotations/io.katacontainers.pkg.oci.bundle_path"
        ops = [
            {"op": "replace", "path": "/cluster_config/pause_container_image", "value": self.refs["pause"]},
            {"op": "replace", "path": "/kata_config/oci_version", "value": OCI_VERSION},
            {"op": "test", "path": "/pause_container/Mounts/1/destination", "value": "/etc/resolv.conf"},
            {"op": "replace", "path": "/pause_container/Mounts/1/options", "value": ["rbind", "ro"]},
            {"op": "replace", "path": "/pause_container" + anno, "value": bundle},
            {"op": "replace", "path": "/other_container" + anno, "value": bundle},
            {"op": "replace", "path": "/pause_container/Annotations/io.kubernetes.cri.sandbox-log-directory",
             "value": logs},
            # Container output readable (kubectl logs), as in Contrast's settings; exec stays denied.
            {"op": "replace", "path": "/request_defaults/ReadStreamRequest", "value": True},
        ]
        kata = json.loads((settings / "genpolicy-settings.json").read_text())
        granted = [c for c in kata["common"]["privileged_caps"] if c in node_capabilities()]
        if granted != kata["common"]["privileged_caps"]:
            # containerd gives a privileged container its own capability set: on a node whose bounding
            # set lacks some (as in some sandboxes), that is what the mesh proxy gets.
            ops.append({"op": "replace", "path": "/common/privileged_caps", "value": granted})
        (settings / "genpolicy-settings.d" / "50-this-node.json").write_text(json.dumps(ops, indent=1))
        return settings

    @staticmethod
    def _mkdir(path: Path) -> Path:
        path.mkdir(exist_ok=True)
        return path

    def contrast(self, *argv: str, workspace: Path | None = None, in_netns: bool = False,
                 timeout: float = 300) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "coordinator.cli", "--workspace-dir", str(workspace or self.owner),
               *argv]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        if in_netns:
            assert self.net is not None
            return self.net.run(cmd, timeout=timeout, env=env, cwd=REPO)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO,
                              check=False)

    def generate(self) -> str:
        for needed in ("rules.rego", "genpolicy-settings.json"):
            if not (self.kata / needed).is_file():
                raise StepFailedError(f"{self.kata / needed} missing: Kata's genpolicy inputs (--kata-dir)")
        self.deploy.mkdir()
        for name in ("coordinator.yaml", "app.yaml"):
            self._render(DEPLOY / name, self.deploy / name)
        self._simulated_root_secret()
        done = self.contrast(
            "generate", "--simulate-tee", "-p", str(self.kata / "rules.rego"),
            "-s", str(self._settings()), "--oci-layout", str(self.layout),
            "--image-puller-config", str(self._puller_config()),
            "--initializer-image", self.refs["initializer"], "--service-mesh-image", self.refs["meshproxy"],
            str(self.deploy))
        (self.work / "generate.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise StepFailedError(f"contrast generate exited {done.returncode}: {_tail(done.stderr)}")
        manifest_bytes = (self.owner / "manifest.json").read_bytes()
        manifest = json.loads(manifest_bytes)
        roles = {e["WorkloadSecretID"].rsplit("/", 1)[1]: d[:12] for d, e in manifest["Policies"].items()}
        if set(roles) != {"coordinator", "store", "frontend"}:
            raise StepFailedError(f"the manifest should hold the Coordinator, store and frontend policies, "
                                  f"got {sorted(roles)}")
        self.manifest_hash = hashlib.sha256(manifest_bytes).hexdigest()
        return (f"manifest.json sha256 {self.manifest_hash[:16]}…, policies "
                + ", ".join(f"{n} {d}…" for n, d in sorted(roles.items()))
                + "; sidecars injected: " + str(done.stderr.count("injected")))

    # -- pods -------------------------------------------------------------------------------------------

    def _kubelet(self) -> Any:
        if self.kubelet is None:
            from tools.kube import Kubelet

            client = TimedCri(self.ctd.socket)
            self.cri = client
            self.stack.callback(client.close)
            root = self.work / "kubelet"
            root.mkdir()
            self.kubelet = Kubelet(client, runtime_handler="contrast-cc", root=root,
                                   cluster_dns=self.reg.address, container_start_timeout=POD_TIMEOUT)
        return self.kubelet

    def _plans(self, *files: Path) -> list[Any]:
        from tools.kube import load_objects, pod_templates

        return list(pod_templates(load_objects([*files, self.deploy / "simulated-amd.yaml"])))

    def _run_pod(self, plan: Any, key: str, *, ready: bool = False) -> Any:
        """run_pod; with ``ready`` also until every probe passed (mesh proxy /ready, app readiness)."""
        t0 = time.monotonic()
        pod = self._kubelet().run_pod(plan)
        self.pods[key] = pod
        self.state.sandbox(self.ctd.socket, pod.sandbox_id)
        t_started = time.monotonic()
        if ready:
            pod.wait_for_probes(POD_TIMEOUT)
        phases = self.cri.phases(pod.sandbox_id)
        phases.mesh_ready = time.monotonic() - t_started if ready else 0.0
        phases.total = time.monotonic() - t0
        self.timings[key] = phases.total
        self.phases[key] = phases
        return pod

    def coordinator(self) -> str:
        plan = self._plans(self.deploy / "coordinator.yaml")[0]
        pod = self._run_pod(plan, "coordinator")
        self._dns("coordinator", pod.ip)
        self.coordinator_ip = pod.ip
        deadline = time.monotonic() + 120
        while "ready userapi=" not in (log := pod.logs("coordinator")):
            if time.monotonic() > deadline:
                raise StepFailedError(f"the Coordinator did not report ready; its log: {_tail(log)}")
            time.sleep(1)
        return (f"pod {pod.name} at {pod.ip} (pod VM, initdata digest {self._initdata_digest(plan)[:12]}…) "
                f"ready in {self.timings['coordinator']:.1f} s: {log.strip().splitlines()[-1][:80]}")

    @staticmethod
    def _initdata_digest(plan: Any) -> str:
        from attestation import initdata

        raw = initdata.decode_annotation(plan.annotations[initdata.ANNOTATION])
        return hashlib.sha256(raw).hexdigest()

    def set_manifest(self) -> str:
        done = self.contrast("set", "-c", f"{self.coordinator_ip}:1313", "--simulated-root",
                             str(self.work / "simulated-amd"), in_netns=True)
        if done.returncode != 0:
            raise StepFailedError(f"contrast set exited {done.returncode}: {_tail(done.stderr)}")
        return f"accepted by the Coordinator at {self.coordinator_ip}:1313 (attested over aTLS)"

    def verify(self) -> str:
        done = self.contrast("verify", "-c", f"{self.coordinator_ip}:1313", "--simulated-root",
                             str(self.work / "simulated-amd"), in_netns=True)
        if done.returncode != 0:
            raise StepFailedError(f"contrast verify exited {done.returncode}: {_tail(done.stderr)}")
        served = (self.owner / "verify" / "manifest.0.json").read_bytes()
        if served != (self.owner / "manifest.json").read_bytes():
            raise StepFailedError("the Coordinator serves another manifest than manifest.json")
        return f"served manifest sha256 {hashlib.sha256(served).hexdigest()[:16]}… == generated"

    def app_pods(self) -> str:
        plans = {p.workload: p for p in self._plans(self.deploy / "app.yaml")}
        out = []
        for name in ("store", "frontend"):
            pod = self._run_pod(plans[name], name, ready=True)
            self._dns(name, pod.ip)
            out.append(f"{pod.name} {pod.ip}: {self.phases[name].line()}")
        return "ready: " + "; ".join(out)

    def certs(self) -> str:
        from cryptography import x509

        owner_ca = x509.load_pem_x509_certificate((self.owner / "mesh-ca.pem").read_bytes())
        out = []
        for name in ("store", "frontend"):
            log = self.pods[name].logs("contrast-initializer")
            if "event=done" not in log:
                raise StepFailedError(f"{name}'s Initializer did not finish: {_tail(log)}")
            code, stdout, stderr = self.pods[name].exec(name, ["cat", "/contrast/tls-config/mesh-ca.pem"])
            if code != 0:
                raise StepFailedError(f"reading {name}'s mesh CA exited {code}: {stderr[:200]!r}")
            got = x509.load_pem_x509_certificate(stdout)
            if got != owner_ca:
                raise StepFailedError(f"{name}'s mesh CA is not the one `contrast verify` wrote")
            out.append(f"{name}: certificate written (mesh CA {got.subject.rfc4514_string()})")
        return "; ".join(out)

    def mesh(self) -> str:
        assert self.net is not None
        ip = self.pods["frontend"].ip
        deadline = time.monotonic() + 120  # the app's interpreter starts under TCG after its container
        while True:
            try:
                self.net.connect(ip, 8080, timeout=5).close()
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise StepFailedError(f"the frontend at {ip}:8080 does not accept connections: {exc}"
                                          ) from exc
                time.sleep(1)
        code, _ = self.net.http(ip, 8080, "PUT", "/greeting", GREETING.encode())
        if code != 204:
            raise StepFailedError(f"PUT /greeting through the frontend answered {code}, expected 204")
        code, body = self.net.http(ip, 8080, "GET", "/")
        if code != 200 or GREETING.encode() not in body:
            raise StepFailedError(f"GET / answered {code} {body[:120]!r}, expected the store's greeting")
        return f"GET http://{ip}:8080/ -> {body.decode(errors='replace').strip()!r}"

    # -- attacks ------------------------------------------------------------------------------------

    def _explain(self, error: str, plan: Any, endpoint: str) -> str:
        """The guest's explanation of a refusal (``python -m guest explain``: which field of the request
        no policy entry admits, and which YAML field would have to change), from the request kata's
        error text carries and the pod's measured policy."""
        from attestation import initdata

        at = error.find("input = ")
        if at < 0:
            return ""
        text = error[at + len("input = "):].replace("\\\\", "\0").replace('\\"', '"').replace("\0", "\\")
        try:
            request, _ = json.JSONDecoder().raw_decode(text)
        except ValueError:
            return ""
        raw = initdata.decode_annotation(plan.annotations[initdata.ANNOTATION])
        where = Path(tempfile.mkdtemp(prefix="explain-", dir=self.work))
        (where / "policy.rego").write_text(initdata.parse(raw).data["policy.rego"])
        (where / "log.json").write_text(json.dumps({"kind": endpoint, "request": request}) + "\n")
        argv = [sys.executable, "-m", "guest", "explain", "--policy", str(where / "policy.rego"),
                "--log", str(where / "log.json")]
        done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        try:
            reasons = json.loads(done.stdout.splitlines()[0])["reasons"]
        except (IndexError, KeyError, ValueError):
            return ""
        # Without the sandbox's policy state, the state checks fail too: keep what names fields.
        stateless = ("rule body failed", "was not created under this policy",
                     "not recorded in the policy state")
        return "; ".join(r for r in reasons if not any(x in r for x in stateless))

    def attack_exec(self) -> str:
        argv = ["sh", "-c", "cat /contrast/tls-config/key.pem"]
        try:
            code, stdout, _ = self.pods["frontend"].exec("frontend", argv)
        except Exception as exc:
            text = str(exc)
            if "ExecProcessRequest is blocked by policy" not in text:
                raise StepFailedError(f"exec failed, but not by the policy: {text[:300]}") from exc
            why = self._explain(text, self.pods["frontend"].plan, "ExecProcessRequest")
            why = why or "the policy admits no exec in this container but its probes' commands"
            return f"exec {argv} in frontend: ExecProcessRequest is blocked by policy; {why}"
        raise StepFailedError(f"exec ran (exit {code}, {len(stdout)} bytes out): the policy should deny it")

    def _expect_refused(self, plan: Any, key: str, needle: str, what: str) -> str:
        try:
            self._run_pod(plan, key)
        except Exception as exc:
            text = self._last_refusal = str(exc)
            if needle not in text:
                raise StepFailedError(
                    f"{what} failed, but not as expected ({needle!r}): {text[:300]}") from exc
            return f"refused: ...{text[max(0, text.index(needle) - 40):][:220]}"
        raise StepFailedError(f"{what} started: it should have been refused")

    def attack_changed_yaml(self) -> str:
        docs = list(yaml.safe_load_all((self.deploy / "app.yaml").read_text()))
        changed = self.work / "changed.yaml"
        for doc in docs:
            if doc and doc.get("kind") == "Deployment" and doc["metadata"]["name"] == "frontend":
                app = doc["spec"]["template"]["spec"]["containers"][0]
                app["env"].append({"name": "STORE_URL", "value": "http://attacker.example:80"})
                changed.write_text(yaml.safe_dump(doc))
        plan = self._plans(changed)[0]
        detail = self._expect_refused(plan, "changed", "CreateContainerRequest is blocked by policy",
                                      "the changed pod")
        if "container frontend:" not in self._last_refusal:
            raise StepFailedError(f"the refusal was not the changed container's: {self._last_refusal[:300]}")
        why = self._explain(self._last_refusal, plan, "CreateContainerRequest")
        return ("the frontend with env STORE_URL added, same initdata: container frontend: "
                f"CreateContainerRequest is blocked by policy; guest explains: {why or detail}")

    def attack_image_byte(self) -> str:
        assert self.reg is not None
        manifest = json.loads((self.layout / "blobs" / "sha256"
                               / self.refs["demo-store"].rsplit(":", 1)[1]).read_text())
        layer = manifest["layers"][-1]["digest"]  # the apps layer: only the demo images have it
        blob = self.reg.blob_file(layer)
        original = blob.read_bytes()
        flipped = bytearray(original)
        flipped[len(flipped) // 2] ^= 0x01
        blob.write_bytes(bytes(flipped))
        try:
            plan = next(p for p in self._plans(self.deploy / "app.yaml") if p.workload == "store")
            # A second store pod, as a scale-up creates it: another generated name suffix and uid.
            plan = dataclasses.replace(plan, name=plan.name[:-5] + "b2x7q", uid=str(uuid.uuid4()))
            detail = self._expect_refused(plan, "tampered", "digest", "the store pod with a tampered layer")
            if "container store:" not in self._last_refusal:
                raise StepFailedError(f"the failure was not the store's pull: {self._last_refusal[:300]}")
            return f"layer {layer[7:19]}… byte {len(flipped) // 2} flipped: " + detail
        finally:
            blob.write_bytes(original)

    def attack_unlisted_pod(self) -> str:
        """The host generates a policy of its own for a pod of its own: the pod VM boots, but its
        initdata is in no manifest, so the Coordinator gives its Initializer no certificate."""
        intruder = self.work / "intruder"
        intruder.mkdir()
        self._render(DEPLOY / "intruder.yaml", intruder / "intruder.yaml")
        # The host's own `contrast generate` (its own workspace and manifest, which it never gets set:
        # the Coordinator holds the owner's): a Coordinator copy is needed only to satisfy generate.
        self._render(DEPLOY / "coordinator.yaml", intruder / "coordinator.yaml")
        done = self.contrast(
            "generate", "--simulate-tee", "-p", str(self.kata / "rules.rego"), "-s", str(self._settings()),
            "--oci-layout", str(self.layout), "--image-puller-config", str(self.work / "imagepuller.toml"),
            "--initializer-image", self.refs["initializer"], "--service-mesh-image", self.refs["meshproxy"],
            str(intruder), workspace=self._mkdir(self.work / "intruder-workspace"))
        if done.returncode != 0:
            raise StepFailedError(f"the host's contrast generate failed: {_tail(done.stderr)}")
        plan = self._plans(intruder / "intruder.yaml")[0]
        kubelet = self._kubelet()
        pod, volumes = kubelet.start_sandbox(plan)
        self.pods["intruder"] = pod
        self.state.sandbox(self.ctd.socket, pod.sandbox_id)
        init = plan.containers("initContainers")[0]
        kubelet.create_container(pod, init, "spec.initContainers[0]", volumes)
        deadline = time.monotonic() + POD_TIMEOUT
        log = ""
        while time.monotonic() < deadline:
            log = pod.logs("contrast-initializer")
            refused = re.search(r"(PERMISSION_DENIED: policy hash [0-9a-f]+ not found in manifest)", log)
            if refused:
                if pod.status("contrast-initializer").state == kubelet.pb.CONTAINER_EXITED:
                    raise StepFailedError("the intruder's Initializer exited: it should keep being refused")
                attempts = log.count("event=new_mesh_cert_failed")
                return ("pod VM booted with the host's own policy; the Coordinator refuses its Initializer: "
                        f"{refused.group(1)} (attempt {attempts}, retrying; no certificate written)")
            if "event=done" in log:
                raise StepFailedError("the intruder's Initializer got a mesh certificate")
            time.sleep(2)
        raise StepFailedError(f"the intruder's Initializer was not seen refused; its log: {_tail(log)}")

    def attack_plaintext(self) -> str:
        assert self.net is not None
        ip = self.pods["store"].ip
        sock = self.net.connect(ip, 8081)
        with sock:
            sock.settimeout(15)
            sock.sendall(b"GET /kv/greeting HTTP/1.0\r\n\r\n")
            data = b""
            with contextlib.suppress(OSError):
                while chunk := sock.recv(4096):
                    data += chunk
        if data.startswith(b"HTTP/") or GREETING.encode() in data:
            raise StepFailedError(f"the store answered plaintext: {data[:120]!r}")
        kind = "a TLS alert" if data[:1] == b"\x15" else f"{len(data)} bytes, no HTTP"
        return f"{ip}:8081 (the store's port, mTLS via the ingress proxy): plaintext request got {kind}"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(10)


@contextlib.contextmanager
def _interrupts_as_exceptions() -> Iterator[None]:
    import signal

    def raise_interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, raise_interrupt)
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)


def run_demo(state_path: Path, *, keep: bool, report: Path | None, kata: Path) -> int:
    steps = Steps()
    if os.geteuid() != 0:
        steps.say("the real demo needs root (network namespaces, containerd, QEMU); "
                  "`python -m tools.demo --loopback` runs the loopback demo without")
        return 2
    from .state import recorded

    try:
        ctx = recorded(state_path)
        state = ctx.__enter__()
    except FileExistsError as exc:
        steps.say(str(exc))
        return 2
    steps.say(f"confidential containers on this machine (pod VMs under TCG, simulated SEV-SNP); "
              f"state {state_path}")
    status = 1
    demo: Demo | None = None
    with _interrupts_as_exceptions():
        try:
            demo = Demo(steps, state, kata=kata, keep=keep)
            steps.say(f"work dir {demo.work}")
            demo.run()
            status = 0 if steps.all_ok() else 1
        except KeyboardInterrupt:
            steps.say("interrupted: removing everything the demo made")
            status = 130
        finally:
            steps.say(steps.table())
            if report is not None:
                pods = {k: asdict(v) for k, v in demo.phases.items()} if demo is not None else {}
                steps.write_report(report, {"pods": pods})
            if keep and status != 130:
                steps.say(f"--keep: left running; `python -m tools.demo down` removes it "
                          f"(state {state_path})")
                sys.stdout.flush()
                os._exit(status)  # the harnesses' clean-up must not run: `down` does it from the state file
            stop_pods(state, steps.progress)  # while containerd still runs: it removes their netns
            if demo is not None:
                with contextlib.suppress(Exception):
                    demo.close()
            left = teardown(state, steps.progress)
            steps.say("cleaned up: nothing left" if not left else f"left behind: {left}")
            if left and status == 0:
                status = 1
    return status


def down(state_path: Path) -> int:
    if not state_path.exists():
        print(f"no demo state at {state_path}: nothing to remove")
        return 0
    state = State.load(state_path)
    left = teardown(state, print)
    if left:
        print(f"could not remove: {left}")
        return 1
    print(f"removed everything recorded in {state_path}")
    return 0


def kata_default() -> Path:
    return Path(os.environ.get("CG_DEMO_KATA", str(KATA)))


__all__ = ["down", "kata_default", "run_demo"]
