"""``python -m genpolicy`` as a user runs it: YAML in, annotated YAML out, errors that name the field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from attestation import initdata
from genpolicy import (
    INITDATA_ANNOTATION,
    GenerateError,
    Generator,
    Settings,
    StaticImageSource,
    parse_documents,
)
from tests.support import shared_path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
KATA = shared_path("kata-policy", "kata")
GENERATE = KATA / "tests" / "generate" / "testdata"
BUSYBOX = "quay.io/prometheus/busybox:latest"
PINNED = "registry.k8s.io/pause:3.6@sha256:3d380ca8864549e74af4b29c10f9cb0956236dfb01c40ca076fb6c37253234db"


def genpolicy(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    base = [
        "-p",
        str(KATA / "rules.rego"),
        "-j",
        str(KATA / "genpolicy-settings.json"),
        "--images",
        str(HERE / "images.json"),
    ]
    return subprocess.run(
        [sys.executable, "-m", "genpolicy", *base, *argv],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )


def policy_data_of(doc: dict[str, object]) -> dict[str, object]:
    meta = doc["metadata"] if doc["kind"] == "Pod" else doc["spec"]["template"]["metadata"]  # type: ignore[index]
    raw = initdata.decode_annotation(meta["annotations"][INITDATA_ANNOTATION])  # type: ignore[index]
    rego = initdata.parse(raw).data["policy.rego"]
    data: dict[str, object] = json.loads(rego[rego.index("policy_data := ") + len("policy_data := ") :])
    return data


@pytest.mark.parametrize(
    ("pod", "config", "variable", "value"),
    [
        ("pod_with_config_map_ref.yaml", "config_map.yaml", "ENV_FROM_CONFIGMAP", "YmFyCg=="),
        ("pod_with_secret_ref.yaml", "secret.yaml", "ENV_FROM_SECRET", "bar\n"),
    ],
)
def test_kata_generate_yamls_with_config_files(
    tmp_path: Path, pod: str, config: str, variable: str, value: str
) -> None:
    target = tmp_path / pod
    target.write_bytes((GENERATE / pod).read_bytes())
    proc = genpolicy("-y", str(target), "-c", str(GENERATE / config), "--allow-unpinned-images")
    assert proc.returncode == 0, proc.stderr
    (doc,) = list(yaml.safe_load_all(target.read_text()))
    env = policy_data_of(doc)["containers"][1]["OCI"]["Process"]["Env"]  # type: ignore[index]
    assert f"{variable}={value}" in env
    assert "POD_IP=$(pod-ip)" in env and "POD_NAME=$(sandbox-name)" in env
    assert "container busybox (spec.containers[0])" in proc.stderr and variable in proc.stderr
    assert ("Secret values referenced by env are written into the policy" in proc.stderr) == (
        config == "secret.yaml"
    )


def test_every_kata_generate_yaml_goes_through(tmp_path: Path) -> None:
    for path in sorted(GENERATE.glob("*.yaml")):
        proc = genpolicy(
            "--allow-unpinned-images",
            "-c",
            str(GENERATE / "config_map.yaml"),
            "-c",
            str(GENERATE / "secret.yaml"),
            stdin=path.read_text(),
        )
        assert proc.returncode == 0, f"{path.name}: {proc.stderr}"
        docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
        pods = [d for d in docs if d["kind"] == "Pod"]
        assert pods, path.name
        for pod in pods:
            assert policy_data_of(pod)["containers"], path.name


def test_generating_twice_gives_identical_bytes(tmp_path: Path) -> None:
    target = tmp_path / "pod.yaml"
    target.write_text((GENERATE / "simple_pod.yaml").read_text().replace(BUSYBOX, PINNED))
    assert genpolicy("-y", str(target)).returncode == 0
    first = target.read_bytes()
    assert genpolicy("-y", str(target)).returncode == 0  # input now carries the annotation: replaced
    assert target.read_bytes() == first


def test_tag_without_digest_is_refused_naming_the_image(tmp_path: Path) -> None:
    target = tmp_path / "pod.yaml"
    original = (GENERATE / "simple_pod.yaml").read_bytes()
    target.write_bytes(original)
    proc = genpolicy("-y", str(target))
    assert proc.returncode == 1
    assert "Pod/simple-pod: spec.containers[0].image" in proc.stderr and BUSYBOX in proc.stderr
    assert "pinned by digest" in proc.stderr
    assert target.read_bytes() == original  # nothing written


@pytest.mark.parametrize(
    ("mutation", "field"),
    [
        (lambda d: d["spec"].update(containers="nope"), "spec.containers"),
        (lambda d: d["spec"]["containers"][0].pop("image"), "spec.containers[0].image"),
        (
            lambda d: d["spec"]["containers"][0].update(volumeMounts=[{"name": "x", "mountPath": "/x"}]),
            "spec.containers[0].volumeMounts[0].name",
        ),
        (
            lambda d: d["spec"]["containers"][0].update(volumeMounts=[{"name": "x", "mountPath": "rel"}]),
            "spec.containers[0].volumeMounts[0].mountPath",
        ),
        (
            lambda d: d["spec"]["containers"][0].update(
                env=[{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "spec.evil"}}}]
            ),
            "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath",
        ),
        (
            lambda d: d["spec"]["containers"][0].update(envFrom=[{"configMapRef": {"name": "missing"}}]),
            "spec.containers[0].envFrom[0].configMapRef",
        ),
        (lambda d: d["spec"].update(securityContext={"runAsUser": -1}), "spec.securityContext.runAsUser"),
        (lambda d: d.update(kind="Frobnicator"), "kind"),
    ],
)
def test_hostile_yaml_gets_an_error_naming_the_field(mutation: object, field: str) -> None:
    doc = yaml.safe_load((GENERATE / "simple_pod.yaml").read_text().replace(BUSYBOX, PINNED))
    mutation(doc)  # type: ignore[operator]
    generator = Generator(
        Settings.load(KATA / "genpolicy-settings.json"),
        (KATA / "rules.rego").read_text(),
        StaticImageSource.load(HERE / "images.json"),
    )
    with pytest.raises(GenerateError) as info:
        generator.generate(parse_documents(yaml.safe_dump(doc), "pod.yaml"))
    assert field in str(info.value)


def test_rules_without_the_create_container_shape_are_refused() -> None:
    """Pinning needs the guest-pull conjunct in CreateContainerRequest: rules it cannot patch are an error."""
    settings = Settings.load(KATA / "genpolicy-settings.json")
    with pytest.raises(GenerateError, match=r"rules\.rego"):
        Generator(settings, "package agent_policy\n", StaticImageSource.load(HERE / "images.json"))
