"""Generated policies end to end: Kubernetes YAML → ``python -m genpolicy`` (host-EROFS, Kata's rules and
settings) → the pod run by tools.kube through containerd's CRI plugin and our shim → admitted by the
policy in the pod VM. Then one field of the YAML changed without regenerating (image digest, command,
an env value from the ConfigMap, a mount, privileged) and the changed container created in the running
sandbox with the old policy: containerd reports kata's "blocked by policy" error, and the guest's
explanation of the denial names that YAML field. An exec not in the probes is refused.

One pod VM per YAML, one more for the privileged pod (six boots); the changed containers are kubelet
restarts (next attempt) in the running pod.
The settings drop-in says what is particular to this node — containerd's state directory (bundle
paths), the kubelet's log root, host-EROFS without guest pull, emptyDir as shared files, and the pause
image (same layer as the workload image: the VM boots with the sandbox image's layers) — as an operator
states it for genpolicy; the rules and the generator are Kata's / ours unchanged."""

from __future__ import annotations

import contextlib
import copy
import json
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools.kube import Kubelet, PodFailedError, PodPlan, RunningPod, load_objects, pod_templates
from tools.vm.containerd import (
    IMAGE_NAME,
    PAUSE_IMAGE_NAME,
    REPO,
    Containerd,
    busybox_image_archive,
    containerd_missing,
    host_erofs_config,
    running_containerd,
    shim_processes,
)
from tools.vm.cri.client import CriClient

pytestmark = [pytest.mark.root, pytest.mark.vm]

KATA = REPO.parent / "shared" / "testdata" / "kata-policy" / "kata"
VARIANT_IMAGE = "docker.io/library/cc-shim-variant:1"
UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
BLOCKED = "CreateContainerRequest is blocked by policy"


@dataclass
class Node:
    ctd: Containerd
    kubelet: Kubelet
    work: Path
    settings: Path
    layout: Path
    image: str  # IMAGE_NAME@digest
    variant: str  # another image of the same layer, by digest

    def generate(self, name: str, text: str) -> tuple[Path, str]:
        """The YAML written and run through ``python -m genpolicy`` (in place); (path, stderr)."""
        path = self.work / f"{name}.yaml"
        path.write_text(text)
        made = subprocess.run(
            [
                sys.executable,
                "-m",
                "genpolicy",
                "-y",
                str(path),
                "-p",
                str(KATA / "rules.rego"),
                "-j",
                str(self.settings),
                "--oci-layout",
                str(self.layout),
                "--layer-images",
                str(self.work / "genpolicy-layers"),
                "--cache-dir",
                str(self.work / "genpolicy-cache"),
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=300,
            check=False,
        )
        assert made.returncode == 0, made.stderr
        return path, made.stderr

    def denials(self) -> list[dict[str, Any]]:
        """The guest's policy_denied log lines (endpoint and reasons) from the pod VMs' consoles."""
        out = []
        for console in Path(self.ctd.env["CONTRAST_CC_RUN_DIR"]).glob("*/vm/console.log"):
            for line in console.read_text(errors="replace").splitlines():
                m = re.search(r"event=policy_denied endpoint=(\S+) reasons=(\[.*\])\s*$", line)
                if m:
                    out.append({"endpoint": m.group(1), "reasons": json.loads(m.group(2))})
        return out

    def run(self, plan: PodPlan) -> RunningPod:
        try:
            return self.kubelet.run_pod(plan)
        except PodFailedError as exc:
            raise AssertionError(f"{exc}\npolicy denials: {json.dumps(self.denials(), indent=1)}") from None


def _layout(archives: list[Path], out: Path) -> None:
    """One OCI layout holding the images of ``archives`` (genpolicy reads images by digest from it)."""
    for archive in archives:
        with tarfile.open(archive) as tar:
            tar.extractall(out, filter="data")


def _settings(work: Path, ctd: Containerd, log_root: Path, pause: str, emptydir_type: str,
              extra_ops: Sequence[dict[str, Any]] = ()) -> Path:
    directory = work / "settings"
    (directory / "genpolicy-settings.d").mkdir(parents=True)
    shutil.copy(KATA / "genpolicy-settings.json", directory / "genpolicy-settings.json")
    bundle = f"{ctd.base}/state/io.containerd.runtime.v2.task/k8s.io/$(bundle-id)"
    log_dir = f"^{re.escape(str(log_root))}/$(sandbox-namespace)_$(sandbox-name)_{UUID}$"
    ops = [
        # containerd 1.6 (Debian 12) writes runtime-spec 1.0.2-dev (1.7 and 2.x: 1.1.0).
        {"op": "replace", "path": "/kata_config/oci_version", "value": "1.0.2-dev"},
        # ... and binds the sandbox's resolv.conf "rbind, ro" (1.7 adds nosuid, nodev, noexec).
        {"op": "test", "path": "/pause_container/Mounts/1/destination", "value": "/etc/resolv.conf"},
        {"op": "replace", "path": "/pause_container/Mounts/1/options", "value": ["rbind", "ro"]},
        {"op": "replace", "path": "/cluster_config/guest_pull", "value": False},
        {"op": "replace", "path": "/cluster_config/pause_container_image", "value": pause},
        {"op": "replace", "path": "/cluster_config/emptydir_type", "value": emptydir_type},
        {"op": "replace", "path": "/common/image_layer_verification", "value": "host-erofs-dm-verity"},
        {
            "op": "replace",
            "path": "/pause_container/Annotations/io.katacontainers.pkg.oci.bundle_path",
            "value": bundle,
        },
        {
            "op": "replace",
            "path": "/other_container/Annotations/io.katacontainers.pkg.oci.bundle_path",
            "value": bundle,
        },
        {
            "op": "replace",
            "path": "/pause_container/Annotations/io.kubernetes.cri.sandbox-log-directory",
            "value": log_dir,
        },
    ]
    ops += extra_ops
    (directory / "genpolicy-settings.d" / "50-this-node.json").write_text(json.dumps(ops, indent=1))
    return directory


@contextlib.contextmanager
def generated_node(work: Path, request: pytest.FixtureRequest, *, emptydir_mode: str,
                   extra_ops: Sequence[dict[str, Any]] = ()) -> Iterator[Node]:
    """containerd with our shim (``emptydir_mode``: genpolicy's ``emptydir_type`` is set to match),
    the test images imported and laid out for genpolicy, and the settings drop-in; skips if a part is
    missing. At the end no shim is left."""
    from tools.vm.guest_tests import pod_image_dir
    from tools.vm.qemu import qemu_available

    reason = containerd_missing(cni=True) or qemu_available() or (None if KATA.is_dir() else f"no {KATA}")
    if reason:
        pytest.skip(reason)
    config = host_erofs_config(pod_image_dir(request.config), work, emptydir_mode=emptydir_mode)
    with running_containerd(cri_runtime_config=config, cni=True, sandbox_image=PAUSE_IMAGE_NAME) as ctd:
        k8s = Containerd(ctd.base, ctd.proc, ctd.env, namespace="k8s.io")
        archives: list[Path] = []
        digests: dict[str, str] = {}
        for name, kwargs in (
            (IMAGE_NAME, {}),
            (PAUSE_IMAGE_NAME, {"pause": True}),
            (VARIANT_IMAGE, {"name": VARIANT_IMAGE, "extra_env": ("VARIANT=1",)}),
        ):
            archive = work / f"{len(archives)}.tar"
            digests[name] = busybox_image_archive(archive, **kwargs)  # type: ignore[arg-type]
            archives.append(archive)
            for cmd in (
                ("image", "import", str(archive)),
                # What a pull by digest leaves in containerd: the digest reference next to the tag.
                ("image", "tag", name, f"{name.rsplit(':', 1)[0]}@{digests[name]}"),
            ):
                done = k8s.ctr(*cmd)
                assert done.returncode == 0, done.stderr
        layout = work / "layout"
        _layout(archives, layout)
        log_root = work / "var-log-pods"
        pause = f"{PAUSE_IMAGE_NAME}@{digests[PAUSE_IMAGE_NAME]}"
        settings = _settings(work, ctd, log_root, pause, emptydir_mode, extra_ops)
        client = CriClient(ctd.socket)
        client.wait_ready()
        kubelet = Kubelet(client, root=work / "kubelet", log_root=log_root)
        try:
            yield Node(
                ctd,
                kubelet,
                work,
                settings,
                layout,
                f"{IMAGE_NAME}@{digests[IMAGE_NAME]}",
                f"{VARIANT_IMAGE}@{digests[VARIANT_IMAGE]}",
            )
        finally:
            kubelet.close()
            client.close()
        rundir = Path(ctd.env["CONTRAST_CC_RUN_DIR"])
        deadline = time.monotonic() + 30
        while shim_processes(rundir) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert shim_processes(rundir) == []


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Node]:
    # emptyDirs as files copied in (the block-encrypted mode: tests/runtime/test_runtime_emptydir.py)
    with generated_node(tmp_path_factory.mktemp("generated"), request, emptydir_mode="shared-fs") as n:
        yield n


def _plans(path: Path) -> list[PodPlan]:
    return pod_templates(load_objects([path]))


def _changed(path: Path, edit: Any) -> PodPlan:
    """The YAML (with its generated annotation) after ``edit(objects)``: one field changed."""
    objects = load_objects([path])
    edit(objects)
    changed = path.with_name(path.stem + "-changed.yaml")
    changed.write_text(yaml.safe_dump_all(objects))
    (plan,) = [p for p in pod_templates(load_objects([changed]))]
    return plan


def _policy_of(path: Path) -> str:
    """The Rego text of the initdata annotation the generator wrote into ``path``."""
    from attestation import initdata as initdata_format

    (obj,) = [o for o in load_objects([path]) if o.get("kind") in ("Pod", "Deployment")]
    meta = obj["metadata"] if obj["kind"] == "Pod" else obj["spec"]["template"]["metadata"]
    raw = initdata_format.decode_annotation(meta["annotations"][initdata_format.ANNOTATION])
    return initdata_format.parse(raw).data["policy.rego"]


def _denied_input(detail: str) -> dict[str, Any]:
    """The request kata's denial text carries (``input = {...}`` as the rules print it)."""
    start = detail.index('"CreateContainerRequest is blocked by policy')
    text = json.loads(detail[start : detail.rindex('"') + 1])  # containerd quotes the shim's error
    m = re.search(r"allow_create_container_input: input = (\{.*?\}) agent_policy:\d+: ", text)
    assert m, text[:2000]
    return dict(json.loads(m.group(1)))


def explain(work: Path, policy: str, request: dict[str, Any]) -> list[str]:
    """``python -m guest explain`` of one denied CreateContainerRequest: its reasons."""
    (work / "explain.rego").write_text(policy)
    (work / "explain.log").write_text(
        json.dumps({"kind": "CreateContainerRequest", "request": request}) + "\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "guest",
            "explain",
            "--policy",
            str(work / "explain.rego"),
            "--log",
            str(work / "explain.log"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (line,) = [json.loads(x) for x in done.stdout.splitlines() if x.strip()]
    assert line["allowed"] is False, line
    return list(line["reasons"])


def _wait_exit(pod: RunningPod, container: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        status = pod.status(container)
        if status.state == pod.kubelet.pb.CONTAINER_EXITED or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


def _refused(node: Node, pod: RunningPod, path: Path, edit: Any, yaml_field: str, attempt: int) -> None:
    """The YAML at ``path`` changed by ``edit``, its first container created as kubelet's restart of it
    in the running pod: refused by the policy, and ``python -m guest explain`` (as well as the guest's
    own denial log) names ``yaml_field``."""
    plan = _changed(path, edit)
    before = len(node.denials())
    container = copy.deepcopy(plan.spec["containers"][0])
    with pytest.raises(PodFailedError) as refused:
        node.kubelet.create_container(pod, container, "spec.containers[0]", attempt=attempt, plan=plan)
    # containerd's CRI creates the task (our shim's Create, the agent's CreateContainer) at StartContainer.
    assert refused.value.phase == "StartContainer" and BLOCKED in refused.value.detail, refused.value
    reasons = explain(node.work, _policy_of(path), _denied_input(refused.value.detail))
    assert any(r.startswith("YAML:") and yaml_field in r for r in reasons), "\n".join(reasons)
    # Only CreateContainer denials: a ReadStream the settings deny may be logged after it.
    deadline = time.monotonic() + 30
    new: list[dict[str, Any]] = []
    while not new and time.monotonic() < deadline:
        new = [d for d in node.denials()[before:] if d["endpoint"] == "CreateContainerRequest"]
        time.sleep(0.5)
    assert new, node.denials()[before:]
    assert any(yaml_field in r for r in new[-1]["reasons"]), new[-1]["reasons"]


ONE = """
apiVersion: v1
kind: Pod
metadata: {{name: one}}
spec:
  runtimeClassName: contrast-cc
  containers:
  - name: app
    image: {image}
    command: [sh, -c, "echo hello from one; sleep 600"]
    env: [{{name: GREETING, value: hi}}]
"""


def test_one_container(node: Node) -> None:
    path, explained = node.generate("one", ONE.format(image=node.image))
    assert "container app" in explained and "exec     none (exec denied)" in explained
    (plan,) = _plans(path)
    pod = node.run(plan)
    try:
        assert pod.status("app").state == pod.kubelet.pb.CONTAINER_RUNNING
        # genpolicy's default denies ReadStreamRequest: the agent keeps the output (empty CRI log).
        time.sleep(2)
        assert "hello from one" not in pod.logs("app")
        with pytest.raises(PodFailedError, match="ExecProcessRequest is blocked by policy"):
            pod.exec("app", ["sh", "-c", "id"])

        def command(objs: list[dict[str, Any]]) -> None:
            objs[0]["spec"]["containers"][0]["command"] = ["sh", "-c", "echo evil; sleep 600"]

        def image(objs: list[dict[str, Any]]) -> None:
            objs[0]["spec"]["containers"][0]["image"] = node.variant

        def env(objs: list[dict[str, Any]]) -> None:
            objs[0]["spec"]["containers"][0]["env"][0]["value"] = "changed"

        for attempt, (edit, yaml_field) in enumerate(
            (
                (command, "spec.containers[0].command"),
                (image, "spec.containers[0].image"),
                (env, "spec.containers[0].env"),
            ),
            start=1,
        ):
            _refused(node, pod, path, edit, yaml_field, attempt)
        # The unchanged container is still admitted after the refused ones (a restart of it).
        node.kubelet.create_container(pod, plan.spec["containers"][0], "spec.containers[0]", attempt=9)
    finally:
        pod.stop()

    # privileged is a pod-level change (containerd refuses a privileged container in a sandbox that
    # is not): the whole changed pod, with the old annotation, is refused.
    def privileged(objs: list[dict[str, Any]]) -> None:
        objs[0]["spec"]["containers"][0]["securityContext"] = {"privileged": True}

    with pytest.raises(PodFailedError) as refused:
        node.kubelet.run_pod(_changed(path, privileged))
    assert BLOCKED in refused.value.detail, refused.value
    reasons = explain(node.work, _policy_of(path), _denied_input(refused.value.detail))
    assert any(r.startswith("YAML:") and "securityContext" in r for r in reasons), "\n".join(reasons)


INIT_SIDECAR = """
apiVersion: v1
kind: Pod
metadata: {{name: init-sidecar}}
spec:
  runtimeClassName: contrast-cc
  initContainers:
  - name: prepare
    image: {image}
    command: [sh, -c, "test -d /bin && exit 0"]
  - name: sidecar
    image: {image}
    restartPolicy: Always
    command: [sh, -c, "touch /tmp/up && sleep 600"]
    startupProbe:
      exec: {{command: [ls, /tmp/up]}}
      periodSeconds: 2
      timeoutSeconds: 60
      failureThreshold: 30
  containers:
  - name: app
    image: {image}
    command: [sh, -c, "sleep 600"]
"""


def test_init_container_sidecar_and_app(node: Node) -> None:
    path, explained = node.generate("init-sidecar", INIT_SIDECAR.format(image=node.image))
    assert all(f"container {n}" in explained for n in ("prepare", "sidecar", "app")), explained
    (plan,) = _plans(path)
    pod = node.run(plan)
    try:
        pb = pod.kubelet.pb
        prepare = pod.status("prepare")
        assert (prepare.state, prepare.exit_code) == (pb.CONTAINER_EXITED, 0)
        # The app was started only after the sidecar's startup probe (an allowed exec) succeeded.
        assert pod.status("sidecar").state == pb.CONTAINER_RUNNING
        assert pod.status("app").started_at > pod.status("sidecar").started_at
        assert pod.status("app").state == pb.CONTAINER_RUNNING

        def command(objs: list[dict[str, Any]]) -> None:
            objs[0]["spec"]["containers"][0]["command"] = ["sh", "-c", "sleep 601"]

        _refused(node, pod, path, command, "spec.containers[0].command", 1)
    finally:
        pod.stop()


CONFIGMAP_ENV = """
apiVersion: v1
kind: ConfigMap
metadata: {{name: app-config}}
data: {{GREETING: hello, MODE: fast}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      runtimeClassName: contrast-cc
      containers:
      - name: app
        image: {image}
        command: [sh, -c, "sleep 600"]
        env:
        - {{name: GREETING, valueFrom: {{configMapKeyRef: {{name: app-config, key: GREETING}}}}}}
        - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
        envFrom:
        - {{prefix: CFG_, configMapRef: {{name: app-config}}}}
        readinessProbe:
          exec: {{command: [sh, -c, 'test "$GREETING" = hello && test "$CFG_MODE" = fast']}}
          periodSeconds: 2
          timeoutSeconds: 60
"""


def test_env_from_a_configmap(node: Node) -> None:
    path, _ = node.generate("configmap-env", CONFIGMAP_ENV.format(image=node.image))
    (plan,) = _plans(path)
    assert plan.name.startswith("web-") and plan.kind == "Deployment"
    pod = node.run(plan)
    try:
        # The readiness probe (allowed: it is in the YAML) sees the ConfigMap's values in the env.
        pod.wait_for_probes(180)
        assert [r.exit_code for r in pod.probe_results if r.probe == "readinessProbe"][:1] == [0]

        def value(objs: list[dict[str, Any]]) -> None:
            objs[0]["data"]["GREETING"] = "changed"

        _refused(node, pod, path, value, "spec.template.spec.containers[0].env", 1)
    finally:
        pod.stop()


EMPTY_DIR = """
apiVersion: v1
kind: Pod
metadata: {{name: scratch}}
spec:
  runtimeClassName: contrast-cc
  containers:
  - name: app
    image: {image}
    command: [sh, -c, "echo data > /scratch/file && sleep 600"]
    volumeMounts: [{{name: scratch, mountPath: /scratch}}]
    startupProbe:
      exec: {{command: [cat, /scratch/file]}}
      periodSeconds: 2
      timeoutSeconds: 60
      failureThreshold: 30
  volumes:
  - {{name: scratch, emptyDir: {{}}}}
"""


def test_empty_dir(node: Node) -> None:
    path, explained = node.generate("scratch", EMPTY_DIR.format(image=node.image))
    assert "/scratch" in explained
    (plan,) = _plans(path)
    pod = node.run(plan)
    try:
        # The startup probe succeeds once the file the app wrote into the emptyDir is there (its output
        # stays in the guest: Kata's default settings deny ReadStreamRequest).
        pod.wait_for_probes(180)
        assert [r.exit_code for r in pod.probe_results if r.exit_code == 0][:1] == [0]

        def mount(objs: list[dict[str, Any]]) -> None:
            objs[0]["spec"]["containers"][0]["volumeMounts"][0]["mountPath"] = "/etc/scratch"

        _refused(node, pod, path, mount, "spec.containers[0].volumeMounts", 1)
    finally:
        pod.stop()


PROBES = """
apiVersion: v1
kind: Pod
metadata: {{name: probed}}
spec:
  runtimeClassName: contrast-cc
  containers:
  - name: app
    image: {image}
    command: [sh, -c, "touch /tmp/ready && sleep 600"]
    startupProbe:
      exec: {{command: [ls, /tmp/ready]}}
      periodSeconds: 2
      timeoutSeconds: 60
      failureThreshold: 30
    livenessProbe:
      exec: {{command: [sh, -c, "exit 0"]}}
      periodSeconds: 3
      timeoutSeconds: 60
    readinessProbe:
      exec: {{command: [cat, /tmp/ready]}}
      periodSeconds: 3
      timeoutSeconds: 60
"""


def test_exec_probes(node: Node) -> None:
    path, explained = node.generate("probed", PROBES.format(image=node.image))
    assert "ls /tmp/ready" in explained and "sh -c exit 0" in explained, explained
    (plan,) = _plans(path)
    pod = node.run(plan)
    try:
        pod.wait_for_probes(240)
        kinds = {r.probe for r in pod.probe_results if r.exit_code == 0}
        assert kinds == {"startupProbe", "livenessProbe", "readinessProbe"}, pod.probe_results
        assert not pod.failures
        # A probe's command is allowed as an exec; anything else is refused.
        assert pod.exec("app", ["cat", "/tmp/ready"])[0] == 0
        with pytest.raises(PodFailedError, match="ExecProcessRequest is blocked by policy"):
            pod.exec("app", ["cat", "/etc/passwd"])
        with pytest.raises(PodFailedError, match="ExecProcessRequest is blocked by policy"):
            pod.exec("app", ["sh", "-c", "exit 0; cat /etc/passwd"])
    finally:
        pod.stop()
