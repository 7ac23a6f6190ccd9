"""``python -m guest serve | eval | explain`` (console script ``guest-agent``).

serve    the policy agent: boot-time default policy, then measured initdata, then every ttrpc request
         judged; allowed ones go to the in-process backend (``--backend builtin``, the default) or,
         with ``--upstream ADDRESS``, to a kata-agent behind us (proxy mode). SIGTERM/SIGINT close
         the listener and connections cleanly; DestroySandbox ends the builtin agent.
eval     one request (``--endpoint --input``) or a kata-style case list (``--cases``) on one engine,
         one JSON line per evaluation: {"allowed", "ops", "message"} (or "error" instead of "allowed"
         where kata-agent would answer INTERNAL).
explain  replay a policy log (``--policy-log`` of serve) on a fresh engine and print, per denied
         request, which rule bodies failed and the first input field the policy did not match.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.cli import ArgumentParser
from common.logs import setup_logging
from guest.api import RPCS
from guest.decisions import status_for
from guest.interceptor import PolicyInterceptor
from guest.measured import (
    DEFAULT_POLICY_FILE,
    MEASURED_DIR,
    EvidenceLaunchConfig,
    FixedLaunchConfig,
    LaunchConfigSource,
    check_no_initdata,
    deny_all_policy,
    find_initdata_device,
    install_measured_policy,
)
from guest.policy.engine import ALLOW_FAILURES_RULE, AgentPolicy
from guest.policy.errors import InvalidPolicyError, PolicyDeniedError, PolicyError, PolicyInputError
from guest.policy.input import canonical_copy_file_input, from_policy_json, to_policy_json
from guest.policy.log import PolicyLog
from guest.protocols import agent_pb2
from guest.ttrpc import Proxy, parse_address

if TYPE_CHECKING:
    from guest.backend import AgentBackend

__all__ = ["main"]

log = logging.getLogger("guest.cli")


# -- shared -------------------------------------------------------------------------------------------


def canonical_input(endpoint: str, request: Any) -> Any:
    """Fill defaults and drop unknown keys, as kata's test harness does with partial requests."""
    if endpoint == "CopyFileRequest":
        return canonical_copy_file_input(request)
    message_type = getattr(agent_pb2, endpoint, None)
    if message_type is None or not hasattr(message_type, "DESCRIPTOR"):
        return request  # not a message (e.g. AllowRequestsFailingPolicy): used as given
    return to_policy_json(from_policy_json(message_type, request))


# What a policy can be asked: every checked AgentService request, and the agent's own query of the
# AllowRequestsFailingPolicy switch.
ENDPOINTS = frozenset({rpc.endpoint for rpc in RPCS.values() if rpc.checked} | {ALLOW_FAILURES_RULE})


class CliInputError(Exception):
    """A file or argument given on the command line is unusable; the message names it."""

    def __init__(self, message: str, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage  # exit 2 (wrong invocation) rather than 1


def _read_text(option: str, path: str) -> str:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise CliInputError(f"{option} {path}: cannot read: {exc.strerror or exc}") from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CliInputError(f"{option} {path}: not UTF-8 text (byte {exc.start} is 0x{raw[exc.start]:02x})") \
            from exc


def _parse_json(where: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliInputError(f"{where}: not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc


def _load_policy(path: str, rego_v0: bool, policy: AgentPolicy | None = None) -> AgentPolicy:
    """Load `path` into `policy` (a new engine if None); errors name the file."""
    text = _read_text("--policy", path)
    policy = policy if policy is not None else AgentPolicy(rego_v0=rego_v0)
    try:
        policy.set_policy(text, name=path)  # print prefixes carry the path, as with initialize()
    except InvalidPolicyError as exc:
        raise CliInputError(f"--policy {path}: not a loadable Rego policy: {exc}") from exc
    return policy


def _check_endpoint(endpoint: str, where: str) -> None:
    if endpoint not in ENDPOINTS:
        raise CliInputError(
            f"{where}: unknown endpoint {endpoint!r}: not a kata-agent request the policy judges "
            "(e.g. CreateContainerRequest, ExecProcessRequest, CopyFileRequest)", usage=True)


def _eval_line(policy: AgentPolicy, endpoint: str, request: Any) -> dict[str, Any]:
    try:
        value = canonical_input(endpoint, request)
        decision = policy.evaluate(endpoint, value)
    except PolicyInputError as exc:
        return {"error": f"invalid request: {exc}", "ops": None, "message": None}
    except PolicyError as exc:
        return {"error": str(exc), "ops": None, "message": status_for(exc).message}
    message = None
    if not decision.allowed:
        message = status_for(PolicyDeniedError(endpoint, decision.prints)).message
    return {"allowed": decision.allowed, "ops": decision.ops, "message": message}


def _print(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


# -- eval ---------------------------------------------------------------------------------------------


def cmd_eval(args: argparse.Namespace) -> int:
    if args.cases:
        cases = _parse_json(f"--cases {args.cases}", _read_text("--cases", args.cases))
        if not isinstance(cases, list) or not all(isinstance(c, dict) and "kind" in c for c in cases):
            raise CliInputError(f"--cases {args.cases}: expected a JSON list of objects with a \"kind\"")
        for index, case in enumerate(cases):
            _check_endpoint(str(case["kind"]), f"--cases {args.cases}: case {index}")
    elif not args.endpoint or not args.input:
        raise CliInputError("eval: give --cases FILE, or --endpoint NAME and --input FILE", usage=True)
    else:
        _check_endpoint(args.endpoint, "--endpoint")
        request = _parse_json(f"--input {args.input}", _read_text("--input", args.input))
    policy = _load_policy(args.policy, args.rego_v0)
    if args.cases:
        for case in cases:
            _print(_eval_line(policy, case["kind"], case.get("request", {})))
        return 0
    _print(_eval_line(policy, args.endpoint, request))
    return 0


# -- explain ------------------------------------------------------------------------------------------


def _is_result_line(request: Any) -> bool:
    return isinstance(request, dict) and set(request) <= {"allowed", "ops"} and "allowed" in request


def _log_requests(path: str) -> list[tuple[int, str, Any]]:
    """(line number, endpoint, input) of each request in a policy log, in order.

    Left out: result lines (the policy's object answers), and the agent's own AllowRequestsFailingPolicy
    query after each policy load, which is no request of the host's."""
    out = []
    for line_no, line in enumerate(_read_text("--log", path).splitlines(), start=1):
        if not line.strip():
            continue
        entry = _parse_json(f"--log {path}: line {line_no}", line)
        if not isinstance(entry, dict):
            raise CliInputError(f"--log {path}: line {line_no}: expected an object with kind and request")
        endpoint, request = entry.get("kind"), entry.get("request")
        if not isinstance(endpoint, str) or endpoint == ALLOW_FAILURES_RULE or _is_result_line(request):
            continue
        out.append((line_no, endpoint, request))
    return out


def cmd_explain(args: argparse.Namespace) -> int:
    from guest.explain import Explainer

    requests = _log_requests(args.log)
    policy = _load_policy(args.policy, args.rego_v0)
    explainer = Explainer(policy.policy_data, lambda: policy.state)
    for line_no, endpoint, request in requests:
        try:
            decision = policy.evaluate(endpoint, request)
        except PolicyError as exc:
            _print({"line": line_no, "endpoint": endpoint, "error": str(exc)[:2000]})
            continue
        if decision.allowed and not args.all:
            continue
        out: dict[str, Any] = {"line": line_no, "endpoint": endpoint, "allowed": decision.allowed}
        if not decision.allowed:
            out["reasons"] = explainer(endpoint, request, decision.print_lines)
        _print(out)
    return 0


# -- serve --------------------------------------------------------------------------------------------


def _launch_source(spec: str) -> LaunchConfigSource | None:
    """``--evidence``: auto (configfs-tsm or /dev/sev-guest), none, or a fixed ``snp:HEX`` / ``tdx:HEX``."""
    if spec == "none":
        return None
    if spec.startswith(("snp:", "tdx:")):
        platform, _, hex_value = spec.partition(":")
        return FixedLaunchConfig(platform, bytes.fromhex(hex_value))
    if spec == "auto":
        from attestation import detect_provider

        return EvidenceLaunchConfig(detect_provider(allow_simulated=False))
    raise ValueError(f"unknown --evidence {spec!r} (auto, none, snp:HEX, tdx:HEX)")


def _no_tee(exc: Exception) -> bool:
    """``--evidence auto`` found no provider, and the CPU flags do not say this is a TEE guest either."""
    from attestation import NoProviderError, detect_platform

    return isinstance(exc, NoProviderError) and detect_platform() is None


def _without_initdata(policy: AgentPolicy, args: argparse.Namespace) -> None:
    """No initdata device: the default policy stays only if the launch evidence binds none."""
    try:
        source = _launch_source(args.evidence)
    except Exception as exc:
        if _no_tee(exc):  # nothing measured a binding, so there is nothing the host could withhold
            log.warning("event=no_initdata_device binding=unchecked msg=%s",
                        json.dumps(f"{exc}; not a TEE guest, no launch binding to check: "
                                   "default policy stays in force"))
            return
        reason = f"reading launch config: {type(exc).__name__}: {exc}"
        log.error("event=measured_config_failed device=none error=%s", json.dumps(reason))
        policy.set_policy(deny_all_policy(reason))
        return
    check_no_initdata(policy, source)


def _install_initdata(policy: AgentPolicy, args: argparse.Namespace) -> None:
    device = find_initdata_device() if args.initdata == "auto" else Path(args.initdata)
    if device is None:
        _without_initdata(policy, args)
        return
    try:
        source = _launch_source(args.evidence)
    except Exception as exc:  # no TEE, unreadable evidence: fail closed, but tell the host why
        reason = f"reading launch config: {type(exc).__name__}: {exc}"
        log.error("event=measured_config_failed device=%s error=%s", device, json.dumps(reason))
        policy.set_policy(deny_all_policy(reason))
        return
    install_measured_policy(policy, device, source, Path(args.measured_dir))


async def _serve(args: argparse.Namespace) -> int:
    policy_log = PolicyLog(args.policy_log) if args.policy_log else None
    policy = AgentPolicy(rego_v0=args.rego_v0, input_logger=policy_log)
    policy_file = Path(args.policy) if args.policy else DEFAULT_POLICY_FILE
    # Like kata-agent: no usable default policy, no start.
    _load_policy(str(policy_file), args.rego_v0, policy)
    log.warning("event=default_policy_loaded path=%s", policy_file)
    if args.initdata != "none":
        _install_initdata(policy, args)
    interceptor = PolicyInterceptor(policy, explainer=_deferred_explainer(policy))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.upstream is not None:
        return await _serve_proxy(args, interceptor, stop, policy_log)
    return await _serve_builtin(args, interceptor, policy, stop, policy_log)


def _deferred_explainer(policy: AgentPolicy) -> Callable[[str, Any, tuple[str, ...]], list[str]]:
    """guest.explain is imported at the first denial, not at start (it is only needed then)."""
    made: list[Callable[[str, Any, tuple[str, ...]], list[str]]] = []

    def explain(endpoint: str, request: Any, print_lines: tuple[str, ...]) -> list[str]:
        if not made:
            from guest.explain import Explainer

            made.append(Explainer(policy.policy_data, lambda: policy.state))
        return made[0](endpoint, request, print_lines)

    return explain


async def _serve_proxy(args: argparse.Namespace, interceptor: PolicyInterceptor, stop: asyncio.Event,
                       policy_log: PolicyLog | None) -> int:
    proxy = Proxy(parse_address(args.upstream), interceptor)
    bound = await proxy.start(parse_address(args.listen))
    log.warning("event=serving listen=%s upstream=%s", bound, args.upstream)
    try:
        await stop.wait()
    finally:
        log.warning("event=shutting_down")
        await proxy.close()
        if policy_log is not None:
            policy_log.close()
    return 0


def pinned_erofs_layers(policy: AgentPolicy) -> list[dict[str, str]]:
    """Every ``erofs_layers`` entry of the policy's containers (the verity parameters it pins)."""
    data = policy.policy_data()
    if isinstance(data, str):
        data = json.loads(data)
    containers: Any = data.get("containers", []) if isinstance(data, dict) else []
    layers: list[dict[str, str]] = []
    for c in containers if isinstance(containers, list) else []:
        for layer in (c.get("erofs_layers", []) if isinstance(c, dict) else []):
            if isinstance(layer, dict):
                layers.append({str(k): str(v) for k, v in layer.items()})
    return layers


async def _serve_builtin(args: argparse.Namespace, interceptor: PolicyInterceptor, policy: AgentPolicy,
                         stop: asyncio.Event, policy_log: PolicyLog | None) -> int:
    from guest.backend import DeferredBackend, InProcessAgent
    from guest.ttrpc import Server

    def build() -> AgentBackend:
        from guest.backend import AgentBackend

        return AgentBackend(runtime=Path(args.runtime), pinned_layers=lambda: pinned_erofs_layers(policy))

    # Listen first (the policy is in force), then load the backend off the event loop: Health is
    # answered at once, every other request waits for the backend.
    deferred = DeferredBackend(build)
    server = Server(InProcessAgent(interceptor, deferred).handlers())
    bound = await server.start(parse_address(args.listen))
    log.warning("event=serving listen=%s backend=builtin", bound)
    loading = deferred.load()
    stopped = asyncio.ensure_future(stop.wait())
    destroyed: asyncio.Future[Any] | None = None
    try:
        await asyncio.wait({loading, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not stopped.done():
            backend = loading.result()  # a failed load raises here: the agent exits, the VM powers off
            destroyed = asyncio.ensure_future(backend.destroyed.wait())
            await asyncio.wait({destroyed, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if destroyed.done():
                await asyncio.sleep(0.2)  # let the DestroySandbox reply reach the runtime
                log.warning("event=sandbox_destroyed msg=%s", json.dumps("agent exits, the VM powers off"))
    finally:
        if destroyed is not None:
            destroyed.cancel()
        stopped.cancel()
        log.warning("event=shutting_down")
        await server.close()
        if loading.done() and not loading.cancelled() and loading.exception() is None:
            await loading.result().close()
        else:
            loading.cancel()
        if policy_log is not None:
            policy_log.close()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    return asyncio.run(_serve(args))


# -- entry --------------------------------------------------------------------------------------------


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="guest-agent", description=(
        "The policy agent: serve the policy proxy in front of kata-agent, evaluate requests against"
        " a policy, or explain the denials in a policy log."
    ))
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the policy proxy")
    serve.add_argument("--listen", default="vsock://-1:1024")
    serve.add_argument("--backend", default="builtin", choices=["builtin"],
                       help="builtin: the in-process agent backend (default, unless --upstream is given)")
    serve.add_argument("--upstream", default=None,
                       help="proxy mode: forward allowed requests to a kata-agent at this ttrpc address")
    serve.add_argument("--runtime", default="/usr/bin/crun", help="OCI runtime of the builtin backend")
    serve.add_argument("--policy", help=f"default policy file (default {DEFAULT_POLICY_FILE})")
    serve.add_argument("--initdata", default="auto", help="auto | none | DEVICE")
    serve.add_argument("--evidence", default="auto",
                       help="where HOST_DATA/MRCONFIGID come from: auto | none | snp:HEX | tdx:HEX")
    serve.add_argument("--measured-dir", default=str(MEASURED_DIR))
    serve.add_argument("--policy-log", help="write kata's policy log (request inputs) to this file")
    serve.add_argument("--rego-v0", action="store_true", help="parse policies as Rego v0")
    serve.set_defaults(func=cmd_serve)

    ev = sub.add_parser("eval", help="evaluate requests against a policy")
    ev.add_argument("--policy", required=True)
    ev.add_argument("--endpoint")
    ev.add_argument("--input")
    ev.add_argument("--cases")
    ev.add_argument("--rego-v0", action="store_true")
    ev.set_defaults(func=cmd_eval)

    ex = sub.add_parser("explain", help="explain denials in a policy log")
    ex.add_argument("--policy", required=True)
    ex.add_argument("--log", required=True)
    ex.add_argument("--all", action="store_true", help="also list allowed requests")
    ex.add_argument("--rego-v0", action="store_true")
    ex.set_defaults(func=cmd_explain)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        result: int = args.func(args)
    except CliInputError as exc:
        log.error("event=failed command=%s error=%s", args.command, json.dumps(str(exc)))
        return 2 if exc.usage else 1
    except (OSError, PolicyError, ValueError) as exc:
        reason = json.dumps(f"{type(exc).__name__}: {exc}")
        log.error("event=failed command=%s error=%s", args.command, reason)
        return 1
    return result
