"""tools.kube without a runtime: the pods the controllers create (names checked against the generator's
sandbox-name regexes), the API server's defaulting and service-account volume, kubelet's env, mounts,
security context and resources in the CRI ContainerConfig, and the atomic writer's layout."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from genpolicy.resources import sandbox_name_regex
from tools.kube import Kubelet, KubeObjectError, load_objects, pod_templates
from tools.kube.volumes import PodVolumes
from tools.vm.cri.client import CriClient

YAML = """
apiVersion: v1
kind: ConfigMap
metadata: {name: app-config}
data: {GREETING: hello, MODE: fast}
---
apiVersion: v1
kind: Secret
metadata: {name: app-secret}
data: {token: c2VjcmV0}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      runtimeClassName: contrast-cc
      securityContext: {runAsUser: 1000, fsGroup: 2000}
      containers:
      - name: app
        image: docker.io/library/cc-shim-test:1
        command: [sh, -c, "echo $(GREETING) $$HOME"]
        env:
        - {name: GREETING, valueFrom: {configMapKeyRef: {name: app-config, key: GREETING}}}
        - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: WHO, value: "$(POD)-x"}
        envFrom:
        - {prefix: CFG_, configMapRef: {name: app-config}}
        resources: {limits: {cpu: 500m, memory: 64Mi}}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {add: [NET_ADMIN], drop: [ALL]}
        volumeMounts:
        - {name: cache, mountPath: /cache}
        - {name: conf, mountPath: /etc/conf}
        - {name: creds, mountPath: /etc/creds}
      volumes:
      - {name: cache, emptyDir: {}}
      - {name: conf, configMap: {name: app-config}}
      - {name: creds, secret: {secretName: app-secret, defaultMode: 0400}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 1
  serviceName: db
  template:
    spec:
      automountServiceAccountToken: false
      containers: [{name: db, image: "docker.io/library/cc-shim-test:1"}]
"""


@pytest.fixture
def plans(tmp_path: Path) -> list:  # type: ignore[type-arg]
    (tmp_path / "app.yaml").write_text(YAML)
    return pod_templates(load_objects([tmp_path / "app.yaml"]))


def test_controllers_name_pods_as_the_generator_expects(plans: list) -> None:  # type: ignore[type-arg]
    assert [p.kind for p in plans] == ["Deployment", "Deployment", "StatefulSet"]
    objects = {"Deployment": {"name": "web"}, "StatefulSet": {"name": "db"}}
    for plan in plans:
        regex = sandbox_name_regex(plan.kind, objects[plan.kind])
        assert regex is not None and re.fullmatch(regex, plan.name), (plan.name, regex)
    assert plans[0].name != plans[1].name and plans[2].name == "db-0"
    assert plans[0].labels["pod-template-hash"] == plans[1].labels["pod-template-hash"]
    assert plans[0].uid != plans[1].uid and re.fullmatch(r"[0-9a-f-]{36}", plans[0].uid)


def test_api_server_defaults_and_service_account_volume(plans: list) -> None:  # type: ignore[type-arg]
    web, db = plans[0], plans[2]
    app = web.spec["containers"][0]
    assert app["terminationMessagePath"] == "/dev/termination-log"
    assert app["imagePullPolicy"] == "IfNotPresent"
    sa = [v for v in web.spec["volumes"] if v["name"].startswith("kube-api-access-")]
    assert len(sa) == 1
    assert {
        "name": sa[0]["name"],
        "readOnly": True,
        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
    } in (app["volumeMounts"])
    assert not any(v["name"].startswith("kube-api-access-") for v in db.spec.get("volumes") or [])


def test_container_config_is_kubelets(plans: list, tmp_path: Path) -> None:  # type: ignore[type-arg]
    cri = CriClient(tmp_path / "no.sock")  # never called: the configs are built offline
    kubelet = Kubelet(cri, root=tmp_path / "kubelet")
    plan = plans[0]
    volumes = PodVolumes(kubelet.root, plan)
    volumes.setup("10.1.2.3", "127.0.0.1")
    kubelet._etc_hosts(plan, volumes, "10.1.2.3")
    app = plan.spec["containers"][0]
    config = kubelet.container_config(
        plan, app, "spec.containers[0]", "sha256:abc", volumes, "10.1.2.3", "127.0.0.1"
    )
    env = {kv.key: kv.value for kv in config.envs}
    assert env["GREETING"] == "hello" and env["CFG_MODE"] == "fast" and env["POD"] == plan.name
    assert env["WHO"] == f"{plan.name}-x"
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"
    assert list(config.command) == ["sh", "-c", "echo hello $HOME"]
    mounts = [(m.container_path, m.readonly) for m in config.mounts]
    assert mounts[:3] == [("/cache", False), ("/etc/conf", True), ("/etc/creds", True)]
    assert [m[0] for m in mounts[3:]] == [
        "/var/run/secrets/kubernetes.io/serviceaccount",
        "/etc/hosts",
        "/dev/termination-log",
    ]
    sc = config.linux.security_context
    assert sc.no_new_privs and sc.readonly_rootfs and not sc.privileged
    assert list(sc.capabilities.add_capabilities) == ["NET_ADMIN"]
    assert list(sc.capabilities.drop_capabilities) == ["ALL"]
    assert sc.run_as_user.value == 1000 and list(sc.supplemental_groups) == [2000]
    assert sc.seccomp.profile_type == kubelet.pb.SecurityProfile.Unconfined
    res = config.linux.resources
    assert (res.cpu_quota, res.cpu_period, res.memory_limit_in_bytes) == (50000, 100000, 64 << 20)
    assert res.cpu_shares == 512 and res.oom_score_adj == -997  # requests default to limits: Guaranteed
    assert config.log_path == "app/0.log" and config.labels["io.kubernetes.pod.uid"] == plan.uid
    assert config.annotations["io.kubernetes.container.terminationMessagePolicy"] == "File"
    sandbox = kubelet.sandbox_config(plan)
    assert sandbox.metadata.name == plan.name and sandbox.hostname == plan.name
    assert sandbox.log_directory.endswith(f"default_{plan.name}_{plan.uid}")
    assert list(sandbox.dns_config.options) == ["ndots:5"]
    assert sandbox.labels["app"] == "web" and sandbox.linux.cgroup_parent == f"/kubepods/pod{plan.uid}"
    assert sandbox.linux.security_context.namespace_options.network == kubelet.pb.POD


def test_atomic_writer_layout(plans: list, tmp_path: Path) -> None:  # type: ignore[type-arg]
    plan = plans[0]
    volumes = PodVolumes(tmp_path, plan)
    volumes.setup("", "127.0.0.1")
    creds = volumes.path("creds", "x")
    assert creds.parent.name == "kubernetes.io~secret"
    data = os.readlink(creds / "..data")
    assert data.startswith("..") and (creds / data).is_dir()
    assert os.readlink(creds / "token") == "..data/token"
    assert (creds / "token").read_bytes() == b"secret"
    assert (creds / data / "token").stat().st_mode & 0o777 == 0o400
    sa = next(p for n, p in volumes.paths.items() if n.startswith("kube-api-access-"))
    assert sorted(x.name for x in sa.iterdir() if not x.name.startswith("..")) == [
        "ca.crt",
        "namespace",
        "token",
    ]
    assert (sa / "namespace").read_text() == "default"
    assert (volumes.path("cache", "x").stat().st_mode & 0o777) == 0o777


def test_hostile_objects_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: i, "
        "volumeMounts: [{name: v, mountPath: /x}]}]\n  volumes: [{name: v, configMap: {name: cm, "
        "items: [{key: k, path: ../../etc/passwd}]}}]\n---\napiVersion: v1\nkind: ConfigMap\n"
        "metadata: {name: cm}\ndata: {k: v}\n"
    )
    (plan,) = pod_templates(load_objects([bad]))
    with pytest.raises(KubeObjectError, match=r"items\[0\]\.path.*relative path"):
        PodVolumes(tmp_path / "root", plan).setup("", "127.0.0.1")
    assert not (tmp_path / "etc").exists()
