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

HERE = Path(__file__).resolve().parent
KATA = HERE.parents[1].parent / "shared" / "testdata" / "kata-policy" / "kata"
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


@pytest.mark.parametrize("directory", case_dirs())
def test_generated_policy_decides_kata_cases(directory: str) -> None:
    policy = AgentPolicy()
    policy.set_policy(generate_for(directory))
    cases = json.loads((CASES / directory / "testcases.json").read_text())
    got = [decide(policy, case) for case in cases]
    wrong = [
        f"#{i} {c['description']}: expected allowed={c['allowed']}"
        for i, (c, g) in enumerate(zip(cases, got, strict=True))
        if g != c["allowed"]
    ]
    assert not wrong, "\n".join(wrong)
