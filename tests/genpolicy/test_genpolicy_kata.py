"""The generator against kata's own data: policies generated from kata's policy-test pod YAMLs decide
kata's test cases exactly as kata's harness expects (kata runs genpolicy on the same YAMLs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from genpolicy import Generator, Settings, StaticImageSource, parse_documents
from guest.cli import canonical_input
from guest.policy.engine import AgentPolicy
from tests.support import shared_path

HERE = Path(__file__).resolve().parent
KATA = shared_path("kata-policy", "kata")
CASES = KATA / "tests" / "policy" / "testdata"
IMAGES = StaticImageSource.load(HERE / "images.json")


def kata_generator() -> Generator:
    settings = Settings.load(KATA / "genpolicy-settings.json")
    return Generator(settings, (KATA / "rules.rego").read_text(), IMAGES, require_digest=False)


def case_dirs() -> list[str]:
    return sorted(
        p.parent.relative_to(CASES).as_posix()
        for p in CASES.rglob("testcases.json")
        if (p.parent / "pod.yaml").is_file()
    )


def generate_for(directory: str) -> str:
    folder = CASES / directory
    text = (folder / "pod.yaml").read_text()
    for extra in ("config_map.yaml", "secret.yaml"):
        if (folder / extra).is_file():
            text += "\n---\n" + (folder / extra).read_text()
    (result,) = kata_generator().generate(parse_documents(text, str(folder / "pod.yaml")))
    return result.rego


def decide(policy: AgentPolicy, case: dict[str, Any]) -> bool:
    return policy.evaluate(case["kind"], canonical_input(case["kind"], case["request"])).allowed


PROPAGATION_DIRS = frozenset(
    d for d in case_dirs() if "mountPropagation" in (CASES / d / "pod.yaml").read_text()
)


def expectation(directory: str, case: dict[str, Any]) -> bool:
    """kata's expected decision, except where this generator is stricter on purpose: for a pod with a
    Bidirectional mount containerd sends that bind ``rshared`` and ``Linux.RootfsPropagation:
    rshared``; kata's requests (``rprivate``, no rootfs propagation) are what a host that dropped the
    propagation would send, refused (tests/genpolicy/test_genpolicy_propagation.py)."""
    if directory in PROPAGATION_DIRS and case["kind"] == "CreateContainerRequest":
        linux = (case["request"].get("OCI") or {}).get("Linux") or {}
        if not linux.get("RootfsPropagation"):
            return False
    return bool(case["allowed"])


@pytest.mark.parametrize("directory", case_dirs())
def test_generated_policy_decides_kata_cases(directory: str) -> None:
    policy = AgentPolicy()
    policy.set_policy(generate_for(directory))
    cases = json.loads((CASES / directory / "testcases.json").read_text())
    got = [decide(policy, case) for case in cases]
    wrong = [
        f"#{i} {c['description']}: expected allowed={expectation(directory, c)}"
        for i, (c, g) in enumerate(zip(cases, got, strict=True))
        if g != expectation(directory, c)
    ]
    assert not wrong, "\n".join(wrong)


def pinned_dirs() -> list[str]:
    """Directories whose pod YAML names every image by digest."""
    out = []
    for directory in case_dirs():
        images = [
            line.split("image:", 1)[1].strip().strip('"')
            for line in (CASES / directory / "pod.yaml").read_text().splitlines()
            if "image:" in line
        ]
        if images and all("@sha256:" in i for i in images):
            out.append(directory)
    return out


def pinned_expectation(case: dict[str, Any], directory: str = "") -> bool:
    """kata's expected decision, except where the pinned rule is stricter on purpose: a workload
    container without an image_guest_pull storage would run whatever rootfs the host prepared."""
    request = case["request"]
    annotations = (request.get("OCI") or {}).get("Annotations") or {}
    workload = annotations.get("io.kubernetes.cri.container-type") != "sandbox"
    pulls = any(s.get("driver") == "image_guest_pull" for s in request.get("storages") or [])
    if case["kind"] == "CreateContainerRequest" and workload and not pulls:
        return False
    return expectation(directory, case)


def pinned_policy(directory: str) -> str:
    settings = Settings.load(KATA / "genpolicy-settings.json")
    generator = Generator(settings, (KATA / "rules.rego").read_text(), IMAGES)
    (result,) = generator.generate(parse_documents((CASES / directory / "pod.yaml").read_text(), directory))
    assert "allow_guest_pull_image(p_container, i_oci, i_storages)" in result.rego
    return result.rego


@pytest.mark.parametrize("directory", pinned_dirs())
def test_pinned_policy_decides_kata_cases(directory: str) -> None:
    """With the images pinned the generated policy carries the guest-pull rule; kata's cases decide as
    kata expects, but for pulls the rule now requires."""
    policy = AgentPolicy()
    policy.set_policy(pinned_policy(directory))
    cases = json.loads((CASES / directory / "testcases.json").read_text())
    for index, case in enumerate(cases):
        assert decide(policy, case) == pinned_expectation(case, directory), f"#{index} {case['description']}"


def test_pinned_policy_refuses_another_digest() -> None:
    """Every allowed guest-pull CreateContainer of kata's cases, with the pulled digest swapped by the
    host, is refused by the generated policy, while the untouched request right after it is allowed
    (cases replayed in order on one engine, so the state is what kata's harness builds)."""
    tampered = 0
    for directory in pinned_dirs():
        policy = AgentPolicy()
        policy.set_policy(pinned_policy(directory))
        for case in json.loads((CASES / directory / "testcases.json").read_text()):
            pulls = [
                s for s in case["request"].get("storages") or [] if s.get("driver") == "image_guest_pull"
            ]
            if case["kind"] == "CreateContainerRequest" and pulls and pinned_expectation(case, directory):
                evil = json.loads(json.dumps(case))
                for storage in evil["request"]["storages"]:
                    if storage.get("driver") == "image_guest_pull":
                        storage["source"] = storage["source"].split("@")[0] + "@sha256:" + "66" * 32
                assert not decide(policy, evil), f"{directory}: {case['description']}"
                tampered += 1
            expected = pinned_expectation(case, directory)
            assert decide(policy, case) == expected, f"{directory}: {case['description']}"
    assert tampered >= 3
