"""`python -m guest eval | explain | serve`: real subprocesses and files, kata's cases as input."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from agent_harness import FakeAgent
from kata_testdata import KATA_TESTDATA, POLICIES, load_cases

from guest.cli import main
from guest.protocols import agent_pb2
from guest.ttrpc import Client, Code, Request, Server, parse_address

REPO = Path(__file__).resolve().parents[2]


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    assert main(argv) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.mark.parametrize("directory", ["copyfile", "state/createcontainer", "createcontainer/env_vars"])
def test_eval_cases_match_kata(directory: str, capsys: pytest.CaptureFixture[str]) -> None:
    lines = run_main(["eval", "--policy", str(POLICIES / directory / "policy.rego"),
                      "--cases", str(KATA_TESTDATA / directory / "testcases.json")], capsys)
    cases = load_cases(directory)
    assert [line["allowed"] for line in lines] == [c["allowed"] for c in cases]
    for line, case in zip(lines, cases, strict=True):
        if not case["allowed"]:
            assert str(line["message"]).startswith(f'"{case["kind"]} is blocked by policy: ')


def test_eval_single_request_and_internal_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    req = tmp_path / "req.json"
    req.write_text(json.dumps({"container_id": "never-created"}))
    policy = str(POLICIES / "state" / "createcontainer" / "policy.rego")
    (line,) = run_main(["eval", "--policy", policy, "--endpoint", "RemoveContainerRequest",
                        "--input", str(req)], capsys)
    assert "allowed" not in line and "path is invalid" in str(line["error"])  # kata: INTERNAL
    (line,) = run_main(["eval", "--policy", policy, "--endpoint", "StartContainerRequest",
                        "--input", str(req)], capsys)
    assert line == {"allowed": True, "ops": None, "message": None}


def test_explain_replays_policy_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = "createcontainer/env_vars"
    log = tmp_path / "policy.jsonl"
    from guest.cli import canonical_input

    with log.open("w") as f:
        for case in load_cases(directory):
            request = canonical_input(case["kind"], case["request"])
            f.write(json.dumps({"kind": case["kind"], "request": request}))
            f.write("\n")
    policy = str(POLICIES / directory / "policy.rego")
    lines = run_main(["explain", "--policy", policy, "--log", str(log)], capsys)
    denied = [c for c in load_cases(directory) if not c["allowed"]]
    assert len(lines) == len(denied) == 1
    reasons = lines[0]["reasons"]
    assert isinstance(reasons, list)
    assert "rule body failed: CreateContainerRequest" in reasons
    env_reason = [r for r in reasons if ".OCI.Process.Env[" in r]
    assert env_reason, reasons
    # the value of the offending variable is never shown
    bad_var = next(v for v in denied[0]["request"]["OCI"]["Process"]["Env"]
                   if v not in load_cases(directory)[0]["request"]["OCI"]["Process"]["Env"])
    name, _, value = bad_var.partition("=")
    assert name in env_reason[0] and (not value or value not in " ".join(reasons))


async def test_serve_subprocess_forwards_denies_and_stops_on_sigterm(tmp_path: Path) -> None:
    agent = FakeAgent()
    server = Server(agent.handlers())  # type: ignore[arg-type]
    await server.start(parse_address(f"unix://{tmp_path}/agent.sock"))
    policy = POLICIES / "state" / "createcontainer" / "policy.rego"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "guest", "serve", "--listen", f"unix://{tmp_path}/proxy.sock",
        "--upstream", f"unix://{tmp_path}/agent.sock", "--policy", str(policy), "--initdata", "none",
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=asyncio.subprocess.PIPE,
    )
    try:
        for _ in range(200):
            if (tmp_path / "proxy.sock").exists():
                break
            await asyncio.sleep(0.05)
        client = await Client().connect(parse_address(f"unix://{tmp_path}/proxy.sock"))
        ok = await client.request(Request("grpc.AgentService", "StartContainer",
                                          agent_pb2.StartContainerRequest(container_id="c").SerializeToString()))
        assert ok.status.code == Code.OK and len(agent.received) == 1
        denied = await client.request(Request("grpc.AgentService", "PauseContainer", b""))
        assert denied.status.code == Code.PERMISSION_DENIED and len(agent.received) == 1
        await client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 20)
        await server.close()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert b"event=shutting_down" in stderr


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    import shutil
    import subprocess

    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    unit = REPO / "guest" / "guest-agent.service"
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "guest-agent.service" not in result.stderr  # no warnings about our unit
    text = unit.read_text()
    assert "--listen vsock://-1:1024" in text and "--upstream unix:///run/kata-agent.sock" in text


SMALL_POLICY = """package agent_policy

default StartContainerRequest := true
default PauseContainerRequest := false
"""


def _guest(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "guest", *argv], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120, check=False)


async def test_explain_on_a_serve_policy_log_shows_only_the_hosts_requests(tmp_path: Path) -> None:
    """The log of a real ``serve --policy-log`` holds the agent's own AllowRequestsFailingPolicy query
    after the policy load; explain must not report it (as an internal error) when the policy has no such
    rule, and must still explain the one denial."""
    policy = tmp_path / "policy.rego"
    policy.write_text(SMALL_POLICY)
    log = tmp_path / "policy.jsonl"
    agent = FakeAgent()
    server = Server(agent.handlers())  # type: ignore[arg-type]
    await server.start(parse_address(f"unix://{tmp_path}/agent.sock"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "guest", "serve", "--listen", f"unix://{tmp_path}/proxy.sock",
        "--upstream", f"unix://{tmp_path}/agent.sock", "--policy", str(policy), "--initdata", "none",
        "--policy-log", str(log), cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while not (tmp_path / "proxy.sock").exists():
            assert asyncio.get_running_loop().time() < deadline and proc.returncode is None
            await asyncio.sleep(0.05)
        client = await Client().connect(parse_address(f"unix://{tmp_path}/proxy.sock"))
        await client.request(Request("grpc.AgentService", "StartContainer",
                                     agent_pb2.StartContainerRequest(container_id="c").SerializeToString()))
        denied = await client.request(Request("grpc.AgentService", "PauseContainer", b""))
        assert denied.status.code == Code.PERMISSION_DENIED
        await client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 20)
        await server.close()
    assert "AllowRequestsFailingPolicy" in log.read_text()  # the agent's own query is in the log
    explained = _guest("explain", "--policy", str(policy), "--log", str(log))
    assert explained.returncode == 0, explained.stderr
    lines = [json.loads(line) for line in explained.stdout.splitlines()]
    assert [(line["endpoint"], line["allowed"]) for line in lines] == [("PauseContainerRequest", False)]
    assert "error" not in explained.stdout


def test_eval_unknown_endpoint_fails_naming_it(tmp_path: Path) -> None:
    policy = tmp_path / "policy.rego"
    policy.write_text(SMALL_POLICY)
    (tmp_path / "req.json").write_text("{}")
    proc = _guest("eval", "--policy", str(policy), "--endpoint", "NoSuchRequest", "--input",
                  str(tmp_path / "req.json"))
    assert proc.returncode == 2 and proc.stdout == ""
    assert "unknown endpoint 'NoSuchRequest'" in proc.stderr
    (tmp_path / "cases.json").write_text(json.dumps([{"kind": "StartContainerRequest"},
                                                     {"kind": "NoSuchRequest"}]))
    proc = _guest("eval", "--policy", str(policy), "--cases", str(tmp_path / "cases.json"))
    assert proc.returncode == 2 and "case 1: unknown endpoint 'NoSuchRequest'" in proc.stderr


@pytest.mark.parametrize("which", ["policy", "input", "log", "serve policy"])
@pytest.mark.parametrize("content", [b"\x00\xff\xfe binary", b'{"kind": '])
def test_unusable_files_are_named(tmp_path: Path, which: str, content: bytes) -> None:
    serve = which == "serve policy"
    which = which.split()[-1]
    files = {name: tmp_path / name for name in ("policy", "input", "log")}
    files["policy"].write_text(SMALL_POLICY)
    files["input"].write_text("{}")
    files["log"].write_text('{"kind":"PauseContainerRequest","request":{}}\n')
    files[which].write_bytes(content)
    if serve:  # the agent itself refuses to start, naming the file
        proc = _guest("serve", "--policy", str(files["policy"]), "--initdata", "none",
                      "--listen", f"unix://{tmp_path}/proxy.sock", "--upstream", f"unix://{tmp_path}/agent.sock")
    elif which == "log":
        proc = _guest("explain", "--policy", str(files["policy"]), "--log", str(files["log"]))
    else:
        proc = _guest("eval", "--policy", str(files["policy"]), "--endpoint", "StartContainerRequest",
                      "--input", str(files["input"]))
    assert proc.returncode == 1 and proc.stdout == ""
    assert f"--{which} {files[which]}" in proc.stderr
    if content.startswith(b"\x00"):
        expected = "not UTF-8"
    else:
        expected = "not a loadable Rego policy" if which == "policy" else "not JSON"
    assert expected in proc.stderr


def test_help_is_plain_text_and_bad_options_show_the_commands_usage() -> None:
    for argv in (["--help"], ["eval", "--help"], ["explain", "--help"], ["serve", "--help"]):
        shown = _guest(*argv)
        assert shown.returncode == 0 and "`" not in shown.stdout, shown.stdout
    bad = _guest("explain", "--policy", "p", "--log", "l", "--bogus")
    assert bad.returncode == 2 and bad.stderr.startswith("usage: guest-agent explain ")
