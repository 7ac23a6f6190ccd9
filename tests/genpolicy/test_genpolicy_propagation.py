"""Mount propagation pinned by the generated policy (Contrast's secure-pv: the initializer sidecar
mounts the decrypted volume through a Bidirectional emptyDir, the workload sees it through
HostToContainer).

containerd's CRI turns ``mountPropagation`` into the bind's option (``rshared`` / ``rslave``) and
the container's ``Linux.RootfsPropagation`` (``rshared`` if a mount is Bidirectional, else
``rslave`` if one is HostToContainer). The generator pins both; the rules compare the rootfs
propagation exactly (Kata's rules refuse any). Requests: kata's own allowed CreateContainer cases
for its emptyDir pod (``/mnt/test2`` is Bidirectional there), in the shape containerd sends them,
then altered as a host would."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from genpolicy import Generator, Settings, StaticImageSource, parse_documents
from guest.cli import canonical_input
from guest.policy.engine import AgentPolicy
from tests.genpolicy.test_genpolicy_kata import CASES, HERE, KATA, generate_for

DIRECTORY = "createcontainer/volumes/emptydir"
BIDIRECTIONAL = "/mnt/test2"


def containerd_shaped(case: dict[str, Any]) -> dict[str, Any]:
    """Kata's request as containerd's CRI sends it for that pod: the Bidirectional bind rshared and
    ``Linux.RootfsPropagation: rshared``."""
    request = copy.deepcopy(case["request"])
    for m in request["OCI"]["Mounts"]:
        if m["destination"] == BIDIRECTIONAL:
            m["options"] = ["rbind", "rshared", *m["options"][2:]]
    request["OCI"].setdefault("Linux", {})["RootfsPropagation"] = "rshared"
    return request


def allowed_cases() -> list[dict[str, Any]]:
    cases = json.loads((CASES / DIRECTORY / "testcases.json").read_text())
    return [c for c in cases if c["allowed"] and c["kind"] == "CreateContainerRequest"]


def _decide(request: dict[str, Any], policy: str | None = None) -> bool:
    engine = AgentPolicy()
    engine.set_policy(policy or generate_for(DIRECTORY))
    kind = "CreateContainerRequest"
    return engine.evaluate(kind, canonical_input(kind, request)).allowed


def test_kata_cases_in_containerds_shape_are_allowed() -> None:
    cases = allowed_cases()
    assert len(cases) >= 2 and any(
        m["destination"] == BIDIRECTIONAL for c in cases for m in c["request"]["OCI"]["Mounts"]
    )
    for case in cases:
        assert _decide(containerd_shaped(case)), case["description"]


def _mount(request: dict[str, Any], destination: str) -> dict[str, Any]:
    return dict(next(m for m in request["OCI"]["Mounts"] if m["destination"] == destination))


def _set(request: dict[str, Any], destination: str, **fields: Any) -> None:
    next(m for m in request["OCI"]["Mounts"] if m["destination"] == destination).update(fields)


COPIED = "/run/kata-containers/shared/containers/" + "a" * 64 + "-0123456789abcdef-test2"
ATTACKS = {
    # The host sends the Bidirectional bind private: the sidecar's mount would never leave it.
    "bind-rprivate": lambda r: _set(r, BIDIRECTIONAL, options=["rbind", "rprivate", "rw"]),
    "bind-rslave": lambda r: _set(r, BIDIRECTIONAL, options=["rbind", "rslave", "rw"]),
    "rootfs-unset": lambda r: r["OCI"]["Linux"].update(RootfsPropagation=""),
    "rootfs-rslave": lambda r: r["OCI"]["Linux"].update(RootfsPropagation="rslave"),
    "rootfs-rprivate": lambda r: r["OCI"]["Linux"].update(RootfsPropagation="rprivate"),
    # A mount the YAML left private made shared (a peer of the guest's volume).
    "other-bind-rshared": lambda r: _set(r, "/mnt/test", options=["rbind", "rshared", "rw"]),
    # Another source for the volume: a directory the host copied in.
    "copied-source": lambda r: _set(r, BIDIRECTIONAL, source=COPIED),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_host_that_changes_the_propagation_or_source_is_denied(attack: str) -> None:
    request = containerd_shaped(allowed_cases()[0])
    assert _decide(request)
    ATTACKS[attack](request)
    assert not _decide(request)


def test_known_limit_block_emptydirs_are_not_bound_to_their_mounts() -> None:
    """Kata's settings give every block-encrypted emptyDir mount the source pattern
    ``$(spath)/$(b64_device_id)``: the policy does not say which of the pod's volumes backs which
    mount, so a host can hand a container another (encrypted, guest-keyed, empty) emptyDir of the
    pod. A memory emptyDir's source names the volume (asserted below), hence secure-pv's ``/state``
    as ``medium: Memory``."""
    request = containerd_shaped(allowed_cases()[0])
    _set(request, BIDIRECTIONAL, source=_mount(request, "/mnt/test")["source"])
    assert _decide(request)


SECURE_PV = """
apiVersion: v1
kind: Pod
metadata: {name: pv}
spec:
  runtimeClassName: contrast-cc
  initContainers:
  - name: contrast-initializer
    image: registry.k8s.io/pause:3.6@sha256:3d380ca8864549e74af4b29c10f9cb0956236dfb01c40ca076fb6c37253234db
    restartPolicy: Always
    securityContext: {privileged: true, runAsUser: 65535}
    volumeDevices: [{name: disk, devicePath: /dev/csi0}]
    volumeMounts: [{name: state, mountPath: /state, mountPropagation: Bidirectional}]
  containers:
  - name: app
    image: registry.k8s.io/pause:3.6@sha256:3d380ca8864549e74af4b29c10f9cb0956236dfb01c40ca076fb6c37253234db
    securityContext: {runAsUser: 65535}
    volumeMounts: [{name: state, mountPath: /state, mountPropagation: HostToContainer}]
  - name: other
    image: registry.k8s.io/pause:3.6@sha256:3d380ca8864549e74af4b29c10f9cb0956236dfb01c40ca076fb6c37253234db
    securityContext: {runAsUser: 65535}
    volumeMounts: [{name: state, mountPath: /state}]
  volumes:
  - {name: disk, persistentVolumeClaim: {claimName: disk}}
  - {name: state, emptyDir: {medium: Memory}}
"""


@pytest.mark.parametrize("kind", ["memory", "block-encrypted"])
def test_the_secure_pv_pod_pins_each_containers_propagation(kind: str) -> None:
    """The sidecar's /state rshared with rootfs rshared, the app's rslave with rootfs rslave, a
    container without mountPropagation private with none — for a memory emptyDir and for Kata's
    default block-encrypted one."""
    settings = Settings.load(KATA / "genpolicy-settings.json")
    generator = Generator(
        settings, (KATA / "rules.rego").read_text(), StaticImageSource.load(HERE / "images.json"),
        require_digest=False,
    )
    text = SECURE_PV if kind == "memory" else SECURE_PV.replace("{medium: Memory}", "{}")
    (result,) = generator.generate(parse_documents(text, "secure-pv.yaml"))
    assert "allow_rootfs_propagation(p_oci, i_oci)" in result.rego
    got = {}
    for c in result.policy_data["containers"][1:]:
        state = next(m for m in c["OCI"]["Mounts"] if m["destination"] == "/state")
        got[state["options"][1]] = c["OCI"]["Linux"].get("RootfsPropagation", "")
        if kind == "memory":
            assert state["source"] == "^/run/kata-containers/sandbox/ephemeral/state$"
    assert got == {"rshared": "rshared", "rslave": "rslave", "rprivate": ""}
