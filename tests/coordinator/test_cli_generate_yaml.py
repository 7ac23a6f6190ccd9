"""``contrast generate`` on Kubernetes YAML, run as the data owner runs it (the real CLI process)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from attestation import initdata
from tests.support import shared_path

REPO = Path(__file__).resolve().parents[2]
KATA = shared_path("kata-policy", "kata")
ANNOTATION = "io.katacontainers.config.hypervisor.cc_init_data"


def digest(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


IMAGES = {
    "initializer": f"localhost:5000/contrast/initializer@{digest('initializer')}",
    "mesh": f"localhost:5000/contrast/meshproxy@{digest('mesh')}",
    "coordinator": f"localhost:5000/contrast/coordinator@{digest('coordinator')}",
    "web": f"localhost:5000/demo/web@{digest('web')}",
}

DEPLOYMENT = f"""\
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: coordinator, namespace: default}}
spec:
  template:
    metadata:
      annotations: {{contrast.edgeless.systems/pod-role: coordinator}}
    spec:
      runtimeClassName: contrast-cc
      containers:
      - name: coordinator
        image: {IMAGES["coordinator"]}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: web-config}}
data: {{GREETING: hello}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: default}}
spec:
  template:
    metadata:
      annotations:
        contrast.edgeless.systems/servicemesh-ingress: "web#8080#false"
        contrast.edgeless.systems/servicemesh-egress: "backend#127.137.0.1:8081#backend:8081"
    spec:
      runtimeClassName: contrast-cc
      containers:
      - name: web
        image: {IMAGES["web"]}
        envFrom: [{{configMapRef: {{name: web-config}}}}]
        readinessProbe: {{exec: {{command: [cat, /contrast/tls-config/mesh-ca.pem]}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec: {{ports: [{{port: 8080}}]}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: plain}}
spec:
  template:
    spec:
      containers: [{{name: plain, image: nginx}}]
"""


def image_table(path: Path) -> Path:
    entries = [
        {
            "reference": ref,
            "digest": ref.split("@")[1],
            "config": {"Entrypoint": [f"/bin/{name}"], "Env": ["PATH=/bin"]},
            "passwd": "",
            "group": "",
        }
        for name, ref in IMAGES.items()
    ]
    entries.append(
        {
            "reference": "mcr.microsoft.com/oss/kubernetes/pause:3.6",
            "digest": "",
            "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
            "passwd": "",
            "group": "",
        }
    )
    path.write_text(json.dumps(entries))
    return path


def contrast(workspace: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coordinator.cli", "--workspace-dir", str(workspace), *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=False,
    )


def generate(tmp_path: Path, yaml_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return contrast(
        tmp_path / "ws",
        "generate",
        str(yaml_path),
        "-p",
        str(KATA / "rules.rego"),
        "-s",
        str(KATA / "genpolicy-settings.json"),
        "--images",
        str(image_table(tmp_path / "img.json")),
        "--initializer-image",
        IMAGES["initializer"],
        "--service-mesh-image",
        IMAGES["mesh"],
        "--seedshare-key-bits",
        "2048",
        *extra,
    )


def pod_template(doc: dict[str, Any]) -> dict[str, Any]:
    template: dict[str, Any] = doc["spec"]["template"]
    return template


def test_yaml_mode_injects_annotates_and_writes_the_manifest(tmp_path: Path) -> None:
    app = tmp_path / "app.yaml"
    app.write_text(DEPLOYMENT)
    proc = generate(tmp_path, app)
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(app.read_text()) if d]
    coordinator, _config, web, _service, plain = docs
    assert "initContainers" not in pod_template(coordinator)["spec"]  # the Coordinator gets no Initializer
    spec = pod_template(web)["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["contrast-initializer", "contrast-service-mesh"]
    assert spec["initContainers"][1]["restartPolicy"] == "Always"
    assert {"name": "contrast-secrets", "emptyDir": {"medium": "Memory"}} in spec["volumes"]
    for c in spec["initContainers"] + spec["containers"]:
        assert {"name": "contrast-secrets", "mountPath": "/contrast"} in c["volumeMounts"], c["name"]
    assert "annotations" not in (pod_template(plain).get("metadata") or {})  # not confidential: untouched

    manifest = json.loads((tmp_path / "ws" / "manifest.json").read_text())
    by_secret = {e["WorkloadSecretID"]: (key, e) for key, e in manifest["Policies"].items()}
    assert set(by_secret) == {"apps/v1/StatefulSet/default/coordinator", "apps/v1/Deployment/default/web"}
    for doc, secret_id in (
        (coordinator, "apps/v1/StatefulSet/default/coordinator"),
        (web, "apps/v1/Deployment/default/web"),
    ):
        raw = initdata.decode_annotation(pod_template(doc)["metadata"]["annotations"][ANNOTATION])
        key, entry = by_secret[secret_id]
        assert key == hashlib.sha256(raw).hexdigest()  # the manifest pins exactly the annotated initdata
        assert entry["SANs"] == [doc["metadata"]["name"], "*"]
    coordinator_doc = initdata.parse(
        initdata.decode_annotation(pod_template(coordinator)["metadata"]["annotations"][ANNOTATION])
    )
    assert "owners.json" in coordinator_doc.data  # the owner anchor is measured into the Coordinator
    assert by_secret["apps/v1/StatefulSet/default/coordinator"][1]["Role"] == "coordinator"
    assert (
        "contrast-initializer" in proc.stderr
        and "exec     cat /contrast/tls-config/mesh-ca.pem" in proc.stderr
    )

    first_yaml, first_manifest = app.read_bytes(), (tmp_path / "ws" / "manifest.json").read_bytes()
    again = generate(tmp_path, app)
    assert again.returncode == 0, again.stderr
    assert (
        app.read_bytes() == first_yaml and (tmp_path / "ws" / "manifest.json").read_bytes() == first_manifest
    )


def test_unpinned_image_fails_and_writes_nothing(tmp_path: Path) -> None:
    app = tmp_path / "app.yaml"
    original = DEPLOYMENT.replace(IMAGES["web"], "localhost:5000/demo/web:latest")
    app.write_text(original)
    proc = generate(tmp_path, app)
    assert proc.returncode == 1
    assert "Deployment/web: spec.template.spec.containers[0].image" in proc.stderr
    assert app.read_text() == original
    assert not (tmp_path / "ws" / "manifest.json").exists()


def test_image_puller_config_is_measured_into_every_workload(tmp_path: Path) -> None:
    app = tmp_path / "app.yaml"
    app.write_text(DEPLOYMENT)
    puller = tmp_path / "imagepuller.toml"
    puller.write_text('[registries."10.1.2.3:5000"]\nca = "PEM"\n')
    proc = generate(tmp_path, app, "--image-puller-config", str(puller))
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(app.read_text()) if d]
    for doc in (docs[0], docs[2]):
        raw = initdata.decode_annotation(pod_template(doc)["metadata"]["annotations"][ANNOTATION])
        assert initdata.parse(raw).data["imagepuller.toml"] == puller.read_text()


def test_broken_image_puller_config_fails_and_writes_nothing(tmp_path: Path) -> None:
    app = tmp_path / "app.yaml"
    app.write_text(DEPLOYMENT)
    puller = tmp_path / "imagepuller.toml"
    puller.write_text("registries = 3\n")
    proc = generate(tmp_path, app, "--image-puller-config", str(puller))
    assert proc.returncode == 1
    assert "--image-puller-config" in proc.stderr and "[registries] table" in proc.stderr
    assert app.read_text() == DEPLOYMENT
    assert not (tmp_path / "ws" / "manifest.json").exists()


SECURE_PV_YAML = DEPLOYMENT.split("---")[0] + f"""---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db, namespace: default}}
spec:
  template:
    metadata:
      annotations: {{contrast.edgeless.systems/secure-pv: "disk:state"}}
    spec:
      runtimeClassName: contrast-cc
      containers:
      - name: web
        image: {IMAGES["web"]}
        volumeMounts: [{{name: state, mountPath: /var/lib/db}}]
      volumes: [{{name: state, emptyDir: {{}}}}]
  volumeClaimTemplates:
  - metadata: {{name: disk}}
    spec: {{volumeMode: Block, accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}
"""


def _policy_data(doc: dict[str, Any]) -> dict[str, Any]:
    raw = initdata.decode_annotation(pod_template(doc)["metadata"]["annotations"][ANNOTATION])
    rego = initdata.parse(raw).data["policy.rego"]
    data: dict[str, Any] = json.loads(rego[rego.index("policy_data := ") + len("policy_data := ") :])
    return data


def test_secure_pv_makes_the_initializer_the_volumes_sidecar_and_pins_the_propagation(tmp_path: Path) -> None:
    """Contrast's secure-pv mutation; the mount volume becomes a Memory emptyDir (one guest tmpfs of
    the pod, a shared mount, pinned by name) and the policy pins rshared for the sidecar's /state
    and rslave for the app's, with the matching rootfs propagation."""
    app = tmp_path / "app.yaml"
    app.write_text(SECURE_PV_YAML)
    proc = generate(tmp_path, app)
    assert proc.returncode == 0, proc.stderr
    _coordinator, doc = [d for d in yaml.safe_load_all(app.read_text()) if d]
    spec = pod_template(doc)["spec"]
    (init,) = spec["initContainers"]
    assert init["name"] == "contrast-initializer" and init["restartPolicy"] == "Always"
    assert {"name": "CRYPTSETUP_DEVICE", "value": "/dev/csi0"} in init["env"]
    assert init["volumeDevices"] == [{"name": "disk", "devicePath": "/dev/csi0"}]
    sidecar_state = {"name": "state", "mountPath": "/state", "mountPropagation": "Bidirectional"}
    assert sidecar_state in init["volumeMounts"]
    assert init["securityContext"]["privileged"] is True
    assert init["startupProbe"]["exec"]["command"] == ["test", "-f", "/done"]
    assert init["resources"]["limits"]["memory"] == "100Mi"
    assert {"name": "state", "mountPath": "/var/lib/db", "mountPropagation": "HostToContainer"} in (
        spec["containers"][0]["volumeMounts"]
    )
    assert {"name": "state", "emptyDir": {"medium": "Memory"}} in spec["volumes"]
    containers = _policy_data(doc)["containers"][1:]
    got = {}
    for c in containers:
        (state,) = [m for m in c["OCI"]["Mounts"] if m["destination"] in ("/state", "/var/lib/db")]
        assert state["source"] == "^/run/kata-containers/sandbox/ephemeral/state$"
        got[state["destination"]] = (state["options"][1], c["OCI"]["Linux"].get("RootfsPropagation"))
    assert got == {"/state": ("rshared", "rshared"), "/var/lib/db": ("rslave", "rslave")}
    assert [d["container_path"] for d in containers[0]["devices"]] == ["/dev/csi0"]


def test_a_secure_pv_annotation_that_names_no_block_volume_fails_and_writes_nothing(tmp_path: Path) -> None:
    app = tmp_path / "app.yaml"
    for broken, field in (
        (SECURE_PV_YAML.replace('"disk:state"', '"nodisk:state"'), "volumes[name=nodisk]"),
        (SECURE_PV_YAML.replace("volumeMode: Block", "volumeMode: Filesystem"), "spec.volumeMode"),
        (SECURE_PV_YAML.replace('"disk:state"', '"disk"'), "secure-pv"),
    ):
        app.write_text(broken)
        proc = generate(tmp_path, app)
        assert proc.returncode == 1 and field in proc.stderr, proc.stderr
        assert app.read_text() == broken
        assert not (tmp_path / "ws" / "manifest.json").exists()
