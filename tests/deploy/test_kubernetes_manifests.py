"""The shipped Kubernetes manifests and what `contrast generate` writes pass Kubernetes' own schema.

kubernetes-validate carries the OpenAPI schemas of each Kubernetes release; strict mode refuses
unknown fields, so a field the generator invents or misspells fails here before a cluster sees it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support import shared_path

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "kubernetes"
KATA = shared_path("kata-policy", "kata")
KUBERNETES = "1.33"  # native sidecars (init containers with restartPolicy Always) are GA since 1.33


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("path", sorted(DEPLOY.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_manifests_validate(path: Path) -> None:
    for doc in documents(path):
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_validation_can_fail() -> None:
    doc = documents(DEPLOY / "coordinator.yaml")[0]
    doc["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


APP = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations:
        contrast.edgeless.systems/servicemesh-ingress: "web#8080#false"
        contrast.edgeless.systems/servicemesh-admin-interface-port: "9901"
    spec:
      runtimeClassName: contrast-cc
      containers:
      - name: web
        image: IMAGE
        ports: [{containerPort: 8080}]
"""


def test_generate_output_validates(tmp_path: Path) -> None:
    def ref(name: str) -> str:
        return f"localhost:5000/contrast/{name}@sha256:" + hashlib.sha256(name.encode()).hexdigest()

    coordinator = documents(DEPLOY / "coordinator.yaml")
    coordinator_image = coordinator[0]["spec"]["template"]["spec"]["containers"][0]["image"]
    shutil.copy(DEPLOY / "coordinator.yaml", tmp_path / "coordinator.yaml")
    (tmp_path / "app.yaml").write_text(APP.replace("IMAGE", ref("web")))
    images = [
        {
            "reference": r,
            "digest": r.split("@")[-1] if "@" in r else "",
            "config": {"Entrypoint": ["/x"]},
            "passwd": "",
            "group": "",
        }
        for r in (
            coordinator_image,
            ref("web"),
            ref("initializer"),
            ref("meshproxy"),
            "mcr.microsoft.com/oss/kubernetes/pause:3.6",
        )
    ]
    (tmp_path / "images.json").write_text(json.dumps(images))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "coordinator.cli",
            "--workspace-dir",
            str(tmp_path / "ws"),
            "generate",
            str(tmp_path / "coordinator.yaml"),
            str(tmp_path / "app.yaml"),
            "-p",
            str(KATA / "rules.rego"),
            "-s",
            str(KATA / "genpolicy-settings.json"),
            "--images",
            str(tmp_path / "images.json"),
            "--initializer-image",
            ref("initializer"),
            "--service-mesh-image",
            ref("meshproxy"),
            "--seedshare-key-bits",
            "2048",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("coordinator.yaml", "app.yaml"):
        for doc in documents(tmp_path / name):
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    web = documents(tmp_path / "app.yaml")[0]["spec"]["template"]["spec"]
    assert [c["name"] for c in web["initContainers"]] == ["contrast-initializer", "contrast-service-mesh"]
