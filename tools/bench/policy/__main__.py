"""Policy agent benchmark: one table, one run.

Rows:
* decision time (median, p95) for CreateContainer and ExecProcess: the agent's full path in process
  (protobuf decode, unknown fields dropped, serde JSON, eval_rule, state patch, re-encode) against
  the floor, a bare regorus ``eval_query`` of the same input on an identically configured engine in
  the same process (what kata-agent does per request); results are checked to be identical;
* proxy overhead for a forwarded allowed call (p50): client -> ``python -m guest serve`` -> fake agent,
  minus client -> fake agent directly;
* agent RSS (the serve process) idle and after 10,000 decisions through it.

Targets (issue 4): decision <= 1.3x floor; proxy overhead <= 1 ms p50; RSS <= 40 MB and flat.
Policies: kata's rules.rego with the state/execprocessdeployment policy_data (allowed requests from
kata's test cases) and a real AKS genpolicy output (msft-samples/pod-exec, Rego v0; the kata request
is denied there, which still runs the full CreateContainer rule).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import regorus

from guest.api import AGENT_SERVICE, RPCS
from guest.interceptor import PolicyInterceptor
from guest.policy.builtins import install_lenient_builtins
from guest.policy.engine import POLICY_MAX_COL, POLICY_MAX_FILE_BYTES, POLICY_MAX_LINES, AgentPolicy
from guest.policy.input import from_policy_json, to_policy_json
from guest.protocols import agent_pb2
from guest.ttrpc import Answer, Client, Code, Request, Server, parse_address

REPO = Path(__file__).resolve().parents[3]
KATA = REPO / ".." / "shared" / "testdata" / "kata-policy"
CASES = KATA / "kata" / "tests" / "policy" / "testdata" / "state" / "execprocessdeployment" / "testcases.json"
KATA_POLICY = KATA / "policies" / "state" / "execprocessdeployment" / "policy.rego"
MSFT_POLICY = KATA / "msft-samples" / "pod-exec.policy.rego"


def _percentiles(samples: list[float]) -> tuple[float, float]:
    samples = sorted(samples)
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.95))]


def _floor_engine(text: str, rego_v0: bool, data: dict[str, Any]) -> Any:
    engine = regorus.Engine()
    if rego_v0:
        engine.set_rego_v0(True)
    engine.set_gather_prints(True)
    engine.set_policy_length_config(max_col=POLICY_MAX_COL, max_file_bytes=POLICY_MAX_FILE_BYTES,
                                    max_lines=POLICY_MAX_LINES)
    install_lenient_builtins(engine)  # kata-agent's non-strict builtins, or the floor errors on these inputs
    engine.add_data(data)
    engine.add_policy("agent_policy", text)
    return engine


async def _decision_rows(name: str, path: Path, rego_v0: bool, requests: list[tuple[str, Any]],
                         iterations: dict[str, int]) -> list[list[str]]:
    text = path.read_text()  # noqa: ASYNC240 (setup, before anything is timed)
    policy = AgentPolicy(rego_v0=rego_v0)
    policy.set_policy(text)
    interceptor = PolicyInterceptor(policy)
    rows = []
    by_endpoint = {rpc.endpoint: rpc for rpc in RPCS.values() if rpc.service == AGENT_SERVICE}
    for endpoint, request_json in requests:
        rpc = by_endpoint[endpoint]
        payload = from_policy_json(rpc.request_type, request_json).SerializeToString()
        request = Request(AGENT_SERVICE, rpc.method, payload)
        first = await interceptor(request)  # records state the first time (as a pod start would)
        ours_allowed = not isinstance(first, Answer)
        floor = _floor_engine(text, rego_v0, policy.state)
        input_json = json.dumps(to_policy_json(rpc.request_type.FromString(payload)))
        query = f"data.agent_policy.{endpoint}"
        floor.set_input_json(input_json)
        floor_value = floor.eval_query(query)["result"][0]["expressions"][0]["value"]
        floor.take_prints()
        floor_allowed = floor_value if isinstance(floor_value, bool) else floor_value.get("allowed")
        ours_value = policy.evaluate(endpoint, to_policy_json(rpc.request_type.FromString(payload)))
        same = ours_value.allowed == floor_allowed and (
            isinstance(floor_value, bool) or (floor_value.get("ops") or None) == (ours_value.ops or None))

        def bare(floor: Any = floor, input_json: str = input_json, query: str = query) -> None:
            floor.set_input_json(input_json)
            floor.eval_query(query)
            floor.take_prints()

        n = iterations[endpoint]
        ours_t: list[float] = []
        bare_t: list[float] = []
        for _ in range(n):
            t0 = time.perf_counter()
            await interceptor(request)
            t1 = time.perf_counter()
            bare()
            t2 = time.perf_counter()
            ours_t.append((t1 - t0) * 1e3)
            bare_t.append((t2 - t1) * 1e3)
        om, op = _percentiles(ours_t)
        bm, bp = _percentiles(bare_t)
        rows.append([f"{endpoint} ({name}, {'allowed' if ours_allowed else 'denied'})",
                     f"{om:.3f} / {op:.3f}", f"{bm:.3f} / {bp:.3f}", f"{om / bm:.2f}x",
                     "<= 1.3x, same result", "yes" if same and om / bm <= 1.3 else "NO"])
    return rows


async def _latency(call: Callable[[], Any], n: int) -> float:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = await call()
        samples.append((time.perf_counter() - t0) * 1e3)
        assert r.status.code == Code.OK, r.status
    return statistics.median(samples)


async def _proxy_rows(decisions: int) -> list[list[str]]:
    cases = json.loads(CASES.read_text())
    create = from_policy_json(agent_pb2.CreateContainerRequest, cases[0]["request"]).SerializeToString()
    execp = from_policy_json(agent_pb2.ExecProcessRequest, cases[1]["request"]).SerializeToString()
    start = agent_pb2.StartContainerRequest(container_id="c").SerializeToString()

    async def handle(_: Request) -> bytes:
        return b""

    with tempfile.TemporaryDirectory() as tmp:
        server = Server({key: handle for key in RPCS})
        agent_addr = parse_address(f"unix://{tmp}/agent.sock")
        await server.start(agent_addr)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "guest", "--log-level", "ERROR", "serve", "--listen",
            f"unix://{tmp}/proxy.sock", "--upstream", f"unix://{tmp}/agent.sock",
            "--policy", str(KATA_POLICY), "--initdata", "none",
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        try:
            for _ in range(400):
                if os.path.exists(os.path.join(tmp, "proxy.sock")):  # noqa: ASYNC240
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)
            ps = psutil.Process(proc.pid)
            rss_idle = ps.memory_info().rss / 2**20
            direct = await Client().connect(agent_addr)
            via = await Client().connect(parse_address(f"unix://{tmp}/proxy.sock"))
            r = await via.request(Request(AGENT_SERVICE, "CreateContainer", create))
            assert r.status.code == Code.OK, r.status
            req = Request(AGENT_SERVICE, "StartContainer", start)
            for _ in range(50):  # warm up both paths
                await direct.request(req)
                await via.request(req)
            p50_direct = await _latency(lambda: direct.request(req), 2000)
            p50_via = await _latency(lambda: via.request(req), 2000)
            exec_req = Request(AGENT_SERVICE, "ExecProcess", execp)
            rss_samples = []
            for i in range(decisions):
                r = await via.request(exec_req if i % 2 else req)
                assert r.status.code == Code.OK, r.status
                if i % 2000 == 1999:
                    rss_samples.append(ps.memory_info().rss / 2**20)
            rss_after = ps.memory_info().rss / 2**20
            await direct.close()
            await via.close()
        finally:
            proc.terminate()
            await proc.wait()
            await server.close()
    return [
        ["proxy overhead, forwarded allowed StartContainer (p50)",
         f"{p50_via:.3f} via proxy", f"{p50_direct:.3f} direct", f"+{p50_via - p50_direct:.3f} ms", "<= 1 ms",
         "yes" if p50_via - p50_direct <= 1.0 else "NO"],
        [f"agent RSS idle / after {decisions} decisions (MiB)", f"{rss_idle:.1f} / {rss_after:.1f}",
         "samples " + ",".join(f"{x:.1f}" for x in rss_samples), f"{rss_after - rss_idle:+.1f} MiB",
         "<= 40 MB",
         "yes" if rss_after <= 40 * 1e6 / 2**20 else "NO"],
    ]


def _table(rows: list[list[str]]) -> str:
    head = ["measurement", "agent median / p95 (ms)", "floor median / p95 (ms)", "ratio", "target", "ok"]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]

    def line(r: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


async def _main(args: argparse.Namespace) -> None:
    cases = json.loads(CASES.read_text())
    requests = [("CreateContainerRequest", cases[0]["request"]), ("ExecProcessRequest", cases[1]["request"])]
    iters = {"CreateContainerRequest": args.create, "ExecProcessRequest": args.exec}
    rows = await _decision_rows("kata rules.rego", KATA_POLICY, False, requests, iters)
    rows += await _decision_rows("AKS genpolicy pod-exec, v0", MSFT_POLICY, True, requests, iters)
    rows += await _proxy_rows(args.decisions)
    print(_table(rows))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.ERROR)  # denials are logged as warnings; not part of the table
    parser = argparse.ArgumentParser(prog="python -m tools.bench.policy")
    parser.add_argument("--create", type=int, default=200, help="CreateContainer iterations")
    parser.add_argument("--exec", type=int, default=1000, help="ExecProcess iterations")
    parser.add_argument("--decisions", type=int, default=10_000)
    asyncio.run(_main(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
