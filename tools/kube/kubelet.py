"""A kubelet for one node without an API server: runs a ``PodPlan`` through the CRI exactly the way
kubelet does for the fields our YAMLs use, so the runtime below (containerd's CRI plugin and our shim)
sees the requests a real cluster would send.

RunPodSandbox with kubelet's sandbox config; ImageStatus/PullImage per image by its pull policy; init
containers one at a time to completion (a sidecar — an init container with ``restartPolicy: Always``
— is started and left running); then the app containers; exec probes through ExecSync on their period
in a background thread. ``RunningPod.stop`` is kubelet's pod deletion (StopContainer with the grace
period, StopPodSandbox, RemovePodSandbox) plus the cleanup of the pod's directories."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]

from tools.vm.cri.client import CriClient

from .errors import KubeObjectError, PodFailedError, ProbeFailedError
from .objects import PodPlan
from .volumes import PodVolumes, field_value, make_rshared, undo_rshared

__all__ = ["Kubelet", "ProbeResult", "RunningPod"]

INITDATA_ANNOTATION = "io.katacontainers.config.hypervisor.cc_init_data"
# kubelet's defaults for /proc (securitycontext.defaultMaskedPaths / defaultReadonlyPaths).
MASKED_PATHS = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
CPU_PERIOD = 100_000
MIN_SHARES = 2
# The API server's own Service in the default namespace, whose env vars kubelet gives every container.
MASTER_SERVICE = ("KUBERNETES", "10.96.0.1", 443, "https")
_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_SUFFIX = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined variables replaced, ``$$`` → ``$``, others kept."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _VAR.sub(sub, text)


def quantity(value: Any, resource: str, where: str) -> float:
    """A resource quantity in base units (cores for cpu, bytes for memory)."""
    m = _QUANTITY.match(str(value))
    if m is None:
        raise KubeObjectError(resource, where, repr(value), "a Kubernetes quantity")
    number = float(m.group(1))
    unit = m.group(2) or ""
    return number / 1000 if unit == "m" else number * _SUFFIX[unit]


def _memory_capacity() -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 8 << 30


def _host_resolv() -> tuple[list[str], list[str], list[str]]:
    servers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    with contextlib.suppress(OSError):
        for line in Path("/etc/resolv.conf").read_text().splitlines():
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            if words[0] == "nameserver" and len(words) > 1:
                servers.append(words[1])
            elif words[0] == "search":
                searches = words[1:]
            elif words[0] == "options":
                options.extend(words[1:])
    return servers, searches, options


@dataclass
class ProbeResult:
    container: str
    probe: str  # startupProbe, livenessProbe, readinessProbe
    exit_code: int
    output: bytes
    at: float


@dataclass
class _Probe:
    container: str
    kind: str
    spec: dict[str, Any]
    successes: int = 0
    failures: int = 0
    next_at: float = 0.0


@dataclass
class RunningPod:
    """A pod whose sandbox and containers were created; its probes run until ``stop``."""

    kubelet: Kubelet
    plan: PodPlan
    sandbox_id: str
    sandbox_config: Any
    ip: str
    container_ids: dict[str, str] = field(default_factory=dict)
    volumes: PodVolumes | None = None
    probe_results: list[ProbeResult] = field(default_factory=list)
    failures: list[ProbeFailedError] = field(default_factory=list)
    _probes: list[_Probe] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def log_directory(self) -> Path:
        return Path(self.sandbox_config.log_directory)

    def _cid(self, container: str) -> str:
        if container not in self.container_ids:
            raise KubeObjectError(f"Pod/{self.name}", "container", repr(container), "a container of the pod")
        return self.container_ids[container]

    def exec(self, container: str, argv: list[str], timeout: int = 60) -> tuple[int, bytes, bytes]:
        """ExecSync (what ``kubectl exec`` without a terminal and probes use); a refused exec raises."""
        pb = self.kubelet.pb
        try:
            reply = self.kubelet.cri.call(
                "ExecSync",
                pb.ExecSyncRequest(container_id=self._cid(container), cmd=list(argv), timeout=timeout),
                timeout=timeout + 60,
            )
        except grpc.RpcError as exc:
            raise PodFailedError(self.name, container, "ExecSync", str(exc.details())) from None
        return int(reply.exit_code), bytes(reply.stdout), bytes(reply.stderr)

    def status(self, container: str) -> Any:
        pb = self.kubelet.pb
        return self.kubelet.cri.call(
            "ContainerStatus", pb.ContainerStatusRequest(container_id=self._cid(container)), timeout=60
        ).status

    def logs(self, container: str, attempt: int = 0) -> str:
        """The container's output as ``kubectl logs`` shows it (CRI log lines joined, partials merged)."""
        path = self.log_directory / container / f"{attempt}.log"
        out = []
        with contextlib.suppress(FileNotFoundError):
            for line in path.read_text(errors="replace").splitlines():
                parts = line.split(" ", 3)
                if len(parts) == 4:
                    out.append(parts[3] + ("\n" if parts[2] == "F" else ""))
        return "".join(out)

    def wait_for_probes(self, timeout: float) -> None:
        """Until every probe of the pod succeeded once (readiness: the pod became ready); a probe that
        reached its failure threshold raises ``ProbeFailedError``."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self.failures:
                    raise self.failures[0]
                if all(p.successes > 0 for p in self._probes):
                    return
                pending = [f"{p.container}.{p.kind}" for p in self._probes if p.successes == 0]
                last = [(r.probe, r.exit_code, r.output[-600:]) for r in self.probe_results[-2:]]
            if time.monotonic() > deadline:
                raise PodFailedError(
                    self.name, pending[0].split(".")[0], "probes", f"no success of {pending}; last: {last}"
                )
            time.sleep(0.5)

    def _probe_loop(self) -> None:
        started: set[str] = set()
        while not self._stop.is_set():
            now = time.monotonic()
            for probe in self._probes:
                gated = probe.kind != "startupProbe" and _has_startup(self._probes, probe.container)
                if gated and probe.container not in started:
                    continue
                if now < probe.next_at or self._stop.is_set():
                    continue
                probe.next_at = now + int(probe.spec.get("periodSeconds", 10))
                command = list((probe.spec.get("exec") or {}).get("command") or [])
                try:
                    code, out, err = self.exec(
                        probe.container, command, int(probe.spec.get("timeoutSeconds", 1))
                    )
                except PodFailedError as exc:
                    code, out, err = -1, b"", str(exc).encode()
                if self._stop.is_set():
                    return
                with self._lock:
                    self.probe_results.append(ProbeResult(probe.container, probe.kind, code, out + err, now))
                    if code == 0:
                        probe.successes += 1
                        probe.failures = 0
                        if probe.kind == "startupProbe":
                            started.add(probe.container)
                    else:
                        probe.failures += 1
                        limit = int(probe.spec.get("failureThreshold", 3))
                        if probe.kind != "readinessProbe" and probe.failures >= limit:
                            self.failures.append(
                                ProbeFailedError(
                                    self.name,
                                    probe.container,
                                    probe.kind,
                                    f"failed {probe.failures} times (exit {code}: {(out + err)[:200]!r})",
                                )
                            )
                            probe.failures = 0
            self._stop.wait(0.2)

    def start_probes(self) -> None:
        spec = self.plan.spec
        now = time.monotonic()
        sidecars = [c for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"]
        for c in [*sidecars, *(spec.get("containers") or [])]:
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                p = c.get(kind)
                if not isinstance(p, dict):
                    continue
                if "exec" not in p:
                    continue  # httpGet/tcpSocket/grpc probes are kubelet's own connections, not CRI calls
                delay = int(p.get("initialDelaySeconds", 0))
                self._probes.append(_Probe(str(c["name"]), kind, p, next_at=now + delay))
        if self._probes:
            self._thread = threading.Thread(target=self._probe_loop, name=f"probes-{self.name}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """kubelet's pod deletion: probes stopped, StopContainer (grace period), StopPodSandbox,
        RemovePodSandbox; then the pod's directories on the node are removed."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)
        pb = self.kubelet.pb
        grace = int(self.plan.spec.get("terminationGracePeriodSeconds", 30))
        errors: list[str] = []
        for cid in reversed(list(self.container_ids.values())):
            try:
                self.kubelet.cri.call(
                    "StopContainer",
                    pb.StopContainerRequest(container_id=cid, timeout=grace),
                    timeout=grace + 120,
                )
            except grpc.RpcError as exc:
                errors.append(f"StopContainer {cid[:12]}: {exc.details()}")
        for method, request in (
            ("StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=self.sandbox_id)),
            ("RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=self.sandbox_id)),
        ):
            try:
                self.kubelet.cri.call(method, request, timeout=300)
            except grpc.RpcError as exc:
                errors.append(f"{method}: {exc.details()}")
        pod_dir = self.kubelet.root / "pods" / self.plan.uid
        for point in _mounts_under(pod_dir):  # memory emptyDirs
            subprocess.run(["umount", "-l", point], capture_output=True, check=False, timeout=30)
        shutil.rmtree(pod_dir, ignore_errors=True)
        shutil.rmtree(self.log_directory, ignore_errors=True)
        if errors:
            raise PodFailedError(self.name, "", "stop", "; ".join(errors))


def _mounts_under(directory: Path) -> list[str]:
    prefix = str(directory).rstrip("/") + "/"
    points = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4]
            if point.startswith(prefix):
                points.append(point)
    return sorted(points, key=len, reverse=True)


def _has_startup(probes: list[_Probe], container: str) -> bool:
    return any(p.container == container and p.kind == "startupProbe" for p in probes)


class Kubelet:
    """Runs pods through ``cri`` with ``runtime_handler``; the pods' files live under ``root`` (kubelet's
    root dir) and their logs under ``log_root`` (kubelet's /var/log/pods). ``host_network`` runs every
    pod in the node's network namespace (for nodes without CNI)."""

    def __init__(
        self,
        cri: CriClient,
        *,
        runtime_handler: str = "contrast-cc",
        root: Path,
        host_network: bool = False,
        log_root: Path | None = None,
        cluster_dns: str = "10.96.0.10",
        cluster_domain: str = "cluster.local",
        container_start_timeout: float = 300,
        block_devices: Mapping[str, str] | None = None,
    ) -> None:
        self.cri = cri
        self.pb = cri.pb
        self.runtime_handler = runtime_handler
        self.root = Path(root)
        self.host_network = host_network
        self.log_root = Path(log_root) if log_root is not None else self.root / "logs"
        self.cluster_dns = cluster_dns
        self.cluster_domain = cluster_domain
        self.container_start_timeout = container_start_timeout
        # No API server or CSI here: a block-mode PVC's claim name → the node's device node.
        self.block_devices = dict(block_devices or {})
        self._images: dict[str, str] = {}
        self._root_ready = False
        self._root_bound = False

    def _prepare_root(self) -> None:
        """As kubelet at start: its root directory on a shared mount (mount propagation of pod volumes)."""
        if not self._root_ready:
            self._root_bound = make_rshared(self.root)
            self._root_ready = True

    def close(self) -> None:
        """Undo what the kubelet did to the node at start (the bind mount of its root directory)."""
        if self._root_bound:
            undo_rshared(self.root)
        self._root_ready = self._root_bound = False

    # -- sandbox -----------------------------------------------------------------------------------

    def _host_network(self, plan: PodPlan) -> bool:
        return self.host_network or plan.host_network

    def _namespace_options(self, plan: PodPlan) -> Any:
        pb, spec = self.pb, plan.spec
        pid = (
            pb.NODE if spec.get("hostPID") else pb.POD if spec.get("shareProcessNamespace") else pb.CONTAINER
        )
        return pb.NamespaceOption(
            network=pb.NODE if self._host_network(plan) else pb.POD,
            pid=pid,
            ipc=pb.NODE if spec.get("hostIPC") else pb.POD,
        )

    def _dns_config(self, plan: PodPlan) -> Any:
        spec = plan.spec
        policy = str(spec.get("dnsPolicy", "ClusterFirst"))
        if policy == "ClusterFirst" and self._host_network(plan):
            policy = "Default"  # kubelet: a host-network pod with ClusterFirst uses the node's resolver
        host_servers, host_searches, host_options = _host_resolv()
        servers: list[str] = []
        searches: list[str] = []
        options: list[str] = []
        if policy in ("ClusterFirst", "ClusterFirstWithHostNet"):
            servers = [self.cluster_dns]
            d = self.cluster_domain
            searches = [f"{plan.namespace}.svc.{d}", f"svc.{d}", d, *host_searches]
            options = ["ndots:5"]
        elif policy == "Default":
            servers, searches, options = host_servers, host_searches, host_options
        extra = spec.get("dnsConfig") or {}
        servers += [str(s) for s in extra.get("nameservers") or []]
        searches += [str(s) for s in extra.get("searches") or []]
        for opt in extra.get("options") or []:
            name = str(opt.get("name", ""))
            options = [o for o in options if o.split(":")[0] != name]
            options.append(f"{name}:{opt['value']}" if opt.get("value") is not None else name)
        return self.pb.DNSConfig(servers=servers, searches=list(dict.fromkeys(searches)), options=options)

    def _resources(self, resources: Mapping[str, Any], resource: str, where: str, qos: str) -> Any:
        limits = resources.get("limits") or {}
        requests = dict(resources.get("requests") or {})
        for k, v in limits.items():
            requests.setdefault(k, v)  # the API server defaults a request to its limit
        out = self.pb.LinuxContainerResources()
        if "cpu" in requests:
            out.cpu_shares = max(
                MIN_SHARES, int(quantity(requests["cpu"], resource, f"{where}.requests.cpu") * 1024)
            )
        else:
            out.cpu_shares = MIN_SHARES
        if "cpu" in limits:
            milli = int(quantity(limits["cpu"], resource, f"{where}.limits.cpu") * 1000)
            out.cpu_period = CPU_PERIOD
            out.cpu_quota = max(1000, milli * CPU_PERIOD // 1000)
        if "memory" in limits:
            out.memory_limit_in_bytes = int(quantity(limits["memory"], resource, f"{where}.limits.memory"))
            out.memory_swap_limit_in_bytes = out.memory_limit_in_bytes  # swap off: NoSwap
        if qos == "Guaranteed":
            out.oom_score_adj = -997
        elif qos == "BestEffort":
            out.oom_score_adj = 1000
        else:
            memory = quantity(requests.get("memory", 0), resource, f"{where}.requests.memory")
            out.oom_score_adj = min(999, max(2, 1000 - int(1000 * memory / _memory_capacity())))
        return out

    @staticmethod
    def qos_class(plan: PodPlan) -> str:
        containers = [*plan.containers("initContainers"), *plan.containers()]
        any_set = False
        guaranteed = True
        for c in containers:
            res = c.get("resources") or {}
            limits, requests = res.get("limits") or {}, res.get("requests") or {}
            if limits or requests:
                any_set = True
            for r in ("cpu", "memory"):
                if r not in limits or str(requests.get(r, limits[r])) != str(limits[r]):
                    guaranteed = False
        if not any_set:
            return "BestEffort"
        return "Guaranteed" if guaranteed else "Burstable"

    def sandbox_config(self, plan: PodPlan) -> Any:
        pb, spec = self.pb, plan.spec
        resource = f"Pod/{plan.name}"
        host_net = self._host_network(plan)
        hostname = ""
        if not host_net:
            hostname = str(spec.get("hostname") or plan.name)[:63]
        log_dir = self.log_root / f"{plan.namespace}_{plan.name}_{plan.uid}"
        labels = {
            **plan.labels,
            "io.kubernetes.pod.name": plan.name,
            "io.kubernetes.pod.namespace": plan.namespace,
            "io.kubernetes.pod.uid": plan.uid,
        }
        annotations = {
            **plan.annotations,
            "kubernetes.io/config.source": "api",
            "kubernetes.io/config.seen": time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime()),
        }
        ports = []
        for c in plan.containers():
            for p in c.get("ports") or []:
                ports.append(
                    pb.PortMapping(
                        protocol={"TCP": pb.TCP, "UDP": pb.UDP, "SCTP": pb.SCTP}[
                            str(p.get("protocol", "TCP"))
                        ],
                        container_port=int(p.get("containerPort", 0)),
                        host_port=int(p.get("hostPort", 0)),
                        host_ip=str(p.get("hostIP", "")),
                    )
                )
        psc = spec.get("securityContext") or {}
        sc = pb.LinuxSandboxSecurityContext(
            namespace_options=self._namespace_options(plan),
            supplemental_groups=[int(g) for g in psc.get("supplementalGroups") or []]
            + ([int(psc["fsGroup"])] if psc.get("fsGroup") is not None else []),
            privileged=any(
                (c.get("securityContext") or {}).get("privileged") is True
                for c in [*plan.containers("initContainers"), *plan.containers()]
            ),
            seccomp=self._seccomp(psc),
        )
        if psc.get("runAsUser") is not None:
            sc.run_as_user.value = int(psc["runAsUser"])
        if psc.get("runAsGroup") is not None:
            sc.run_as_group.value = int(psc["runAsGroup"])
        qos = self.qos_class(plan)
        parent = {
            "Guaranteed": "/kubepods",
            "Burstable": "/kubepods/burstable",
            "BestEffort": "/kubepods/besteffort",
        }
        linux = pb.LinuxPodSandboxConfig(
            cgroup_parent=f"{parent[qos]}/pod{plan.uid}",
            security_context=sc,
            sysctls={str(s["name"]): str(s["value"]) for s in psc.get("sysctls") or []},
        )
        total = self._pod_resources(plan, resource, qos)
        if total is not None:
            linux.resources.CopyFrom(total)
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=plan.name, uid=plan.uid, namespace=plan.namespace, attempt=0),
            hostname=hostname,
            log_directory=str(log_dir),
            dns_config=self._dns_config(plan),
            port_mappings=ports,
            labels=labels,
            annotations=annotations,
            linux=linux,
        )

    def _pod_resources(self, plan: PodPlan, resource: str, qos: str) -> Any:
        cpu = memory = 0.0
        any_limit = False
        for c in plan.containers():
            limits = (c.get("resources") or {}).get("limits") or {}
            if "cpu" in limits:
                cpu += quantity(limits["cpu"], resource, "resources.limits.cpu")
                any_limit = True
            if "memory" in limits:
                memory += quantity(limits["memory"], resource, "resources.limits.memory")
                any_limit = True
        if not any_limit:
            return None
        out = self.pb.LinuxContainerResources(cpu_shares=MIN_SHARES)
        if cpu:
            out.cpu_period, out.cpu_quota = CPU_PERIOD, int(cpu * CPU_PERIOD)
        if memory:
            out.memory_limit_in_bytes = int(memory)
        return out

    def _seccomp(self, sc: Mapping[str, Any], pod_sc: Mapping[str, Any] | None = None) -> Any:
        pb = self.pb
        profile = sc.get("seccompProfile") or (pod_sc or {}).get("seccompProfile") or {}
        kind = str(profile.get("type", "Unconfined"))
        if kind == "RuntimeDefault":
            return pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault)
        if kind == "Localhost":
            return pb.SecurityProfile(
                profile_type=pb.SecurityProfile.Localhost,
                localhost_ref=str(profile.get("localhostProfile", "")),
            )
        return pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined)

    # -- images ------------------------------------------------------------------------------------

    def ensure_image(self, plan: PodPlan, container: Mapping[str, Any], sandbox_config: Any) -> str:
        """kubelet's EnsureImageExists: ImageStatus, then PullImage unless present and not ``Always``."""
        pb = self.pb
        image = str(container.get("image", ""))
        name = str(container.get("name", ""))
        policy = str(container.get("imagePullPolicy", "IfNotPresent"))
        spec = pb.ImageSpec(image=image)
        status = self.cri.call("ImageStatus", pb.ImageStatusRequest(image=spec), timeout=60)
        present = status.HasField("image") and bool(status.image.id)
        if present and policy != "Always":
            return str(status.image.id)
        if policy == "Never":
            raise PodFailedError(plan.name, name, "ErrImageNeverPull", f"image {image} is not present")
        try:
            reply = self.cri.call(
                "PullImage", pb.PullImageRequest(image=spec, sandbox_config=sandbox_config), timeout=600
            )
        except grpc.RpcError as exc:
            raise PodFailedError(plan.name, name, "ErrImagePull", str(exc.details())) from None
        return str(reply.image_ref)

    # -- containers --------------------------------------------------------------------------------

    def _env(
        self, plan: PodPlan, c: Mapping[str, Any], where: str, pod_ip: str, host_ip: str
    ) -> dict[str, str]:
        resource = f"Pod/{plan.name}"
        env: dict[str, str] = {}
        if plan.spec.get("enableServiceLinks", True) is not False or plan.namespace == "default":
            svc, ip, port, _ = MASTER_SERVICE
            env.update(
                {
                    f"{svc}_SERVICE_HOST": ip,
                    f"{svc}_SERVICE_PORT": str(port),
                    f"{svc}_SERVICE_PORT_HTTPS": str(port),
                    f"{svc}_PORT": f"tcp://{ip}:{port}",
                    f"{svc}_PORT_{port}_TCP": f"tcp://{ip}:{port}",
                    f"{svc}_PORT_{port}_TCP_PROTO": "tcp",
                    f"{svc}_PORT_{port}_TCP_PORT": str(port),
                    f"{svc}_PORT_{port}_TCP_ADDR": ip,
                }
            )
        for i, src in enumerate(c.get("envFrom") or []):
            kind = "configMapRef" if "configMapRef" in src else "secretRef"
            ref = src.get(kind) or {}
            store = plan.config_maps if kind == "configMapRef" else plan.secrets
            name = str(ref.get("name", ""))
            if name not in store:
                if ref.get("optional") is True:
                    continue
                raise KubeObjectError(
                    resource, f"{where}.envFrom[{i}].{kind}", f"{name!r} not found", "an object"
                )
            prefix = str(src.get("prefix", ""))
            for k, v in sorted(store[name].items()):
                env[prefix + k] = v.decode(errors="replace")
        for i, var in enumerate(c.get("env") or []):
            name = str(var.get("name", ""))
            if "value" in var or "valueFrom" not in var:
                env[name] = expand(str(var.get("value", "")), env)
                continue
            src = var["valueFrom"] or {}
            vw = f"{where}.env[{i}].valueFrom"
            if "fieldRef" in src:
                env[name] = field_value(
                    plan, str(src["fieldRef"].get("fieldPath", "")), pod_ip, host_ip, resource
                )
            elif "configMapKeyRef" in src or "secretKeyRef" in src:
                kind = "configMapKeyRef" if "configMapKeyRef" in src else "secretKeyRef"
                ref = src[kind] or {}
                store = plan.config_maps if kind == "configMapKeyRef" else plan.secrets
                obj, key = store.get(str(ref.get("name", ""))), str(ref.get("key", ""))
                if obj is None or key not in obj:
                    if ref.get("optional") is True:
                        continue
                    raise KubeObjectError(
                        resource, f"{vw}.{kind}", f"{ref.get('name')}/{key} not found", "a key"
                    )
                env[name] = obj[key].decode(errors="replace")
            elif "resourceFieldRef" in src:
                ref = src["resourceFieldRef"] or {}
                field_name = str(ref.get("resource", ""))
                section, _, res = field_name.partition(".")
                value = ((c.get("resources") or {}).get(section) or {}).get(res)
                divisor = quantity(ref.get("divisor", "1"), resource, f"{vw}.divisor")
                if value is None:
                    raise KubeObjectError(
                        resource, f"{vw}.resourceFieldRef", field_name, "a set limit/request"
                    )
                amount = quantity(value, resource, f"{vw}.resourceFieldRef")
                env[name] = str(int(-(-amount // divisor)))
            else:
                raise KubeObjectError(
                    resource, vw, "unknown source", "fieldRef, configMapKeyRef, secretKeyRef"
                )
        return env

    def _security(self, plan: PodPlan, c: Mapping[str, Any]) -> Any:
        pb = self.pb
        psc = plan.spec.get("securityContext") or {}
        sc = c.get("securityContext") or {}
        caps = sc.get("capabilities") or {}
        privileged = sc.get("privileged") is True
        out = pb.LinuxContainerSecurityContext(
            capabilities=pb.Capability(
                add_capabilities=[str(x) for x in caps.get("add") or []],
                drop_capabilities=[str(x) for x in caps.get("drop") or []],
            ),
            privileged=privileged,
            namespace_options=self._namespace_options(plan),
            readonly_rootfs=sc.get("readOnlyRootFilesystem") is True,
            supplemental_groups=[int(g) for g in psc.get("supplementalGroups") or []]
            + ([int(psc["fsGroup"])] if psc.get("fsGroup") is not None else []),
            no_new_privs=sc.get("allowPrivilegeEscalation") is False and not privileged,
            masked_paths=[] if sc.get("procMount") == "Unmasked" else MASKED_PATHS,
            readonly_paths=[] if sc.get("procMount") == "Unmasked" else READONLY_PATHS,
            seccomp=self._seccomp(sc, psc),
        )
        user = sc.get("runAsUser", psc.get("runAsUser"))
        group = sc.get("runAsGroup", psc.get("runAsGroup"))
        if user is not None:
            out.run_as_user.value = int(user)
        if group is not None:
            out.run_as_group.value = int(group)
        return out

    def container_config(
        self,
        plan: PodPlan,
        c: dict[str, Any],
        where: str,
        image_ref: str,
        volumes: PodVolumes,
        pod_ip: str,
        host_ip: str,
        attempt: int = 0,
    ) -> Any:
        pb = self.pb
        name = str(c.get("name", ""))
        resource = f"Pod/{plan.name}"
        env = self._env(plan, c, where, pod_ip, host_ip)
        command = [expand(str(x), env) for x in c.get("command") or []]
        args = [expand(str(x), env) for x in c.get("args") or []]
        mounts = []
        for i, vm in enumerate(c.get("volumeMounts") or []):
            vname = str(vm.get("name", ""))
            host = volumes.path(vname, f"{where}.volumeMounts[{i}].name")
            volume = next(v for v in plan.spec.get("volumes") or [] if v.get("name") == vname)
            forced_ro = any(k in volume for k in ("configMap", "secret", "projected", "downwardAPI"))
            propagation = {
                "HostToContainer": pb.PROPAGATION_HOST_TO_CONTAINER,
                "Bidirectional": pb.PROPAGATION_BIDIRECTIONAL,
            }.get(str(vm.get("mountPropagation", "None")), pb.PROPAGATION_PRIVATE)
            if vm.get("subPath"):
                host = host / str(vm["subPath"])
                host.mkdir(parents=True, exist_ok=True)
            mounts.append(
                pb.Mount(
                    container_path=str(vm.get("mountPath", "")),
                    host_path=str(host),
                    readonly=vm.get("readOnly") is True or forced_ro,
                    propagation=propagation,
                )
            )
        devices = []
        for i, vd in enumerate(c.get("volumeDevices") or []):
            vname = str(vd.get("name", ""))
            volume = next((v for v in plan.spec.get("volumes") or [] if v.get("name") == vname), None)
            claim = str(((volume or {}).get("persistentVolumeClaim") or {}).get("claimName", ""))
            if claim not in self.block_devices:
                where_vd = f"{where}.volumeDevices[{i}].name"
                raise KubeObjectError(resource, where_vd, repr(vname), "a block PVC bound on this node")
            devices.append(
                pb.Device(
                    container_path=str(vd.get("devicePath", "")),
                    host_path=self.block_devices[claim],
                    permissions="mrw",
                )
            )
        if not any(m.container_path == "/etc/hosts" for m in mounts):
            mounts.append(pb.Mount(container_path="/etc/hosts", host_path=str(volumes.pod_dir / "etc-hosts")))
        termination = str(c.get("terminationMessagePath", "/dev/termination-log"))
        if termination:
            tdir = volumes.pod_dir / "containers" / name
            tdir.mkdir(parents=True, exist_ok=True)
            tfile = tdir / secrets.token_hex(4)
            tfile.touch(mode=0o666)
            tfile.chmod(0o666)
            mounts.append(pb.Mount(container_path=termination, host_path=str(tfile)))
        annotations = {
            "io.kubernetes.container.hash": self._hash(c),
            "io.kubernetes.container.restartCount": str(attempt),
            "io.kubernetes.container.terminationMessagePath": termination,
            "io.kubernetes.container.terminationMessagePolicy": str(
                c.get("terminationMessagePolicy", "File")
            ),
            "io.kubernetes.pod.terminationGracePeriod": str(
                plan.spec.get("terminationGracePeriodSeconds", 30)
            ),
        }
        if c.get("ports"):
            ports = [
                {
                    **({"name": p["name"]} if "name" in p else {}),
                    "containerPort": p.get("containerPort"),
                    "protocol": p.get("protocol", "TCP"),
                }
                for p in c["ports"]
            ]
            annotations["io.kubernetes.container.ports"] = json.dumps(ports, separators=(",", ":"))
        pre_stop = (c.get("lifecycle") or {}).get("preStop")
        if pre_stop:
            annotations["io.kubernetes.container.preStopHandler"] = json.dumps(
                pre_stop, separators=(",", ":")
            )
        (self.log_root / f"{plan.namespace}_{plan.name}_{plan.uid}" / name).mkdir(parents=True, exist_ok=True)
        qos = self.qos_class(plan)
        return pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name, attempt=attempt),
            image=pb.ImageSpec(image=image_ref, user_specified_image=str(c.get("image", ""))),
            command=command,
            args=args,
            working_dir=str(c.get("workingDir", "")),
            envs=[pb.KeyValue(key=k, value=v) for k, v in env.items()],
            mounts=mounts,
            devices=devices,
            labels={
                "io.kubernetes.container.name": name,
                "io.kubernetes.pod.name": plan.name,
                "io.kubernetes.pod.namespace": plan.namespace,
                "io.kubernetes.pod.uid": plan.uid,
            },
            annotations=annotations,
            log_path=f"{name}/{attempt}.log",
            stdin=c.get("stdin") is True,
            stdin_once=c.get("stdinOnce") is True,
            tty=c.get("tty") is True,
            linux=pb.LinuxContainerConfig(
                resources=self._resources(c.get("resources") or {}, resource, f"{where}.resources", qos),
                security_context=self._security(plan, c),
            ),
        )

    @staticmethod
    def _hash(c: Mapping[str, Any]) -> str:
        return format(
            int.from_bytes(hashlib.sha256(json.dumps(c, sort_keys=True).encode()).digest()[:4]), "x"
        )

    def _etc_hosts(self, plan: PodPlan, volumes: PodVolumes, ip: str) -> None:
        volumes.pod_dir.mkdir(parents=True, exist_ok=True)
        if self._host_network(plan):
            try:
                host = Path("/etc/hosts").read_text()
            except OSError:
                host = ""
            text = "# Kubernetes-managed hosts file (host network).\n" + host
        else:
            hostname = str(plan.spec.get("hostname") or plan.name)
            text = (
                "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"
                "::1\tlocalhost ip6-localhost ip6-loopback\n"
                "fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n"
            )
            if ip:
                text += f"{ip}\t{hostname}\n"
        path = volumes.pod_dir / "etc-hosts"
        path.write_text(text)
        path.chmod(0o644)

    def _wait_exit(self, pod: RunningPod, name: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            status = pod.status(name)
            if status.state == self.pb.CONTAINER_EXITED:
                return status
            if time.monotonic() > deadline:
                raise PodFailedError(pod.name, name, "init container", f"still running after {timeout:.0f}s")
            time.sleep(0.5)

    def _wait_started(self, pod: RunningPod, c: Mapping[str, Any]) -> None:
        probe = c.get("startupProbe")
        if not isinstance(probe, dict) or "exec" not in probe:
            return
        name = str(c.get("name", ""))
        command = list((probe.get("exec") or {}).get("command") or [])
        time.sleep(int(probe.get("initialDelaySeconds", 0)))
        last: tuple[int, bytes, bytes] = (-1, b"", b"")
        for _ in range(int(probe.get("failureThreshold", 3))):
            try:
                last = pod.exec(name, command, int(probe.get("timeoutSeconds", 1)))
            except PodFailedError as exc:
                last = (-1, b"", str(exc).encode())
            if last[0] == 0:
                return
            time.sleep(int(probe.get("periodSeconds", 10)))
        output = (last[1] + last[2])[:200]
        detail = f"sidecar not started (exit {last[0]}: {output!r})"
        raise ProbeFailedError(pod.name, name, "startupProbe", detail)

    def create_container(
        self,
        pod: RunningPod,
        c: dict[str, Any],
        where: str,
        volumes: PodVolumes | None = None,
        start: bool = True,
        attempt: int = 0,
        plan: PodPlan | None = None,
    ) -> str:
        """CreateContainer (+ StartContainer) of one container in the running pod; its id. A restart
        of a container (kubelet's next ``attempt``) replaces its entry in ``container_ids``; ``plan``:
        the pod as the API server has it now (a restarted container sees ConfigMaps as they are now)."""
        pb = self.pb
        plan = plan or pod.plan
        name = str(c.get("name", ""))
        volumes = volumes or pod.volumes
        assert volumes is not None, "a pod started by start_sandbox has its volumes"
        image_ref = self.ensure_image(plan, c, pod.sandbox_config)
        host_ip = "127.0.0.1"
        config = self.container_config(plan, c, where, image_ref, volumes, pod.ip, host_ip, attempt)
        try:
            cid = str(
                self.cri.call(
                    "CreateContainer",
                    pb.CreateContainerRequest(
                        pod_sandbox_id=pod.sandbox_id, config=config, sandbox_config=pod.sandbox_config
                    ),
                    timeout=self.container_start_timeout,
                ).container_id
            )
        except grpc.RpcError as exc:
            raise PodFailedError(plan.name, name, "CreateContainer", str(exc.details())) from None
        pod.container_ids[name] = cid
        if start:
            try:
                self.cri.call(
                    "StartContainer",
                    pb.StartContainerRequest(container_id=cid),
                    timeout=self.container_start_timeout,
                )
            except grpc.RpcError as exc:
                raise PodFailedError(plan.name, name, "StartContainer", str(exc.details())) from None
        return cid

    def start_sandbox(self, plan: PodPlan) -> tuple[RunningPod, PodVolumes]:
        pb = self.pb
        self._prepare_root()
        config = self.sandbox_config(plan)
        Path(config.log_directory).mkdir(parents=True, exist_ok=True)
        try:
            sid = str(
                self.cri.call(
                    "RunPodSandbox",
                    pb.RunPodSandboxRequest(config=config, runtime_handler=self.runtime_handler),
                    timeout=self.container_start_timeout,
                ).pod_sandbox_id
            )
        except grpc.RpcError as exc:
            raise PodFailedError(plan.name, "", "RunPodSandbox", str(exc.details())) from None
        status = self.cri.call("PodSandboxStatus", pb.PodSandboxStatusRequest(pod_sandbox_id=sid), timeout=60)
        ip = "" if self._host_network(plan) else str(status.status.network.ip)
        pod = RunningPod(self, plan, sid, config, ip)
        volumes = PodVolumes(self.root, plan)
        pod.volumes = volumes
        try:
            volumes.setup(ip or "127.0.0.1", "127.0.0.1")
            self._etc_hosts(plan, volumes, ip)
        except BaseException:
            with contextlib.suppress(PodFailedError):
                pod.stop()
            raise
        return pod, volumes

    def run_pod(self, plan: PodPlan, *, on_container: Callable[[str, str], None] | None = None) -> RunningPod:
        """Everything kubelet does to start ``plan``; on any failure the pod is stopped and removed
        and ``PodFailedError`` names the step."""
        pod, volumes = self.start_sandbox(plan)
        try:
            for i, c in enumerate(plan.containers("initContainers")):
                name = str(c.get("name", ""))
                self.create_container(pod, c, f"spec.initContainers[{i}]", volumes)
                if on_container is not None:
                    on_container(name, pod.container_ids[name])
                if c.get("restartPolicy") == "Always":
                    # A sidecar: left running; kubelet starts the next container once its startup
                    # probe (if any) has succeeded.
                    self._wait_started(pod, c)
                    continue
                status = self._wait_exit(pod, name, self.container_start_timeout)
                if status.exit_code != 0:
                    raise PodFailedError(
                        plan.name,
                        name,
                        "init container failed",
                        f"exit code {status.exit_code} ({status.reason})",
                    )
            for i, c in enumerate(plan.containers()):
                self.create_container(pod, c, f"spec.containers[{i}]", volumes)
                if on_container is not None:
                    on_container(str(c.get("name", "")), pod.container_ids[str(c.get("name", ""))])
            pod.start_probes()
        except BaseException:
            with contextlib.suppress(PodFailedError):
                pod.stop()
            raise
        return pod

    def env_of(self, plan: PodPlan, container: str) -> dict[str, str]:
        """The environment kubelet would give ``container`` (for tests and explanations)."""
        for kind in ("initContainers", "containers"):
            for i, c in enumerate(plan.containers(kind)):
                if c.get("name") == container:
                    return self._env(plan, c, f"spec.{kind}[{i}]", "", "127.0.0.1")
        raise KubeObjectError(f"Pod/{plan.name}", "container", repr(container), "a container of the pod")
