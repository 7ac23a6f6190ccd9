"""Generated code in sync, addresses, the demo, and the bounded fuzz run."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from guest.ttrpc import AddressError, parse_address
from tests.support import run_fuzzer

REPO = Path(__file__).resolve().parents[2]
MYPY_HEADER = '# mypy: disable-error-code="type-arg"\n'

# (proto include root, proto path relative to it, directory the generated files are committed in)
GENERATED = [
    (REPO, "guest/ttrpc/ttrpc.proto", REPO / "guest/ttrpc"),
    (REPO / "tools/gottrpc/src", "peers/echopb/echo.proto", REPO / "tools/gottrpc"),
]


def generate(include: Path, proto: str, out: Path) -> None:
    """Regenerate `<name>_pb2.py` / `.pyi` for one proto into `out` (how the committed ones are made)."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{include}",
                f"--python_out={tmp}",
                f"--pyi_out={tmp}",
                proto,
            ],
            check=True,
        )
        stem = Path(proto).with_suffix("").name + "_pb2"
        gen = Path(tmp) / Path(proto).parent
        (out / f"{stem}.py").write_bytes((gen / f"{stem}.py").read_bytes())
        # The .pyi lacks Mapping type arguments; mypy --strict reads it, so the one error code is waived.
        (out / f"{stem}.pyi").write_text(MYPY_HEADER + (gen / f"{stem}.pyi").read_text())


@pytest.mark.parametrize(("include", "proto", "committed"), GENERATED, ids=lambda v: str(v).split("/")[-1])
def test_generated_code_is_in_sync(include: Path, proto: str, committed: Path, tmp_path: Path) -> None:
    generate(include, proto, tmp_path)
    for f in sorted(tmp_path.iterdir()):
        assert (committed / f.name).read_bytes() == f.read_bytes(), f"{f.name} is stale: regenerate it"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("unix:///run/agent.sock", "unix:///run/agent.sock"),
        ("unix://@abstract", "unix://@abstract"),
        ("vsock://-1:1024", "vsock://-1:1024"),
        ("vsock://3:1024", "vsock://3:1024"),
        ("tcp://127.0.0.1:9000", "tcp://127.0.0.1:9000"),
        ("tcp://[::1]:9000", "tcp://[::1]:9000"),
    ],
)
def test_parse_address_round_trips(text: str, shown: str) -> None:
    assert str(parse_address(text)) == shown


@pytest.mark.parametrize(
    "text",
    [
        "",
        "/run/x.sock",
        "unix://relative",
        "vsock://1024",
        "vsock://x:1",
        "vsock://1:-2",
        "tcp://host",
        "tcp://:80",
        "tcp://h:70000",
        "http://h:1",
        "vsock://1:99999999999",
    ],
)
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(AddressError) as ei:
        parse_address(text)
    assert ei.value.address == text and ei.value.expected


def test_demo_runs_and_exits_zero() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "guest.ttrpc.demo"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert "ReadStdout: OK b'<redacted by policy>'" in r.stdout
    assert "ExecProcess: PERMISSION_DENIED" in r.stdout
    assert "the agent saw: Echo, ReadStdout" in r.stdout


@pytest.mark.slow
def test_fuzz_decoder_bounded(tmp_path: Path) -> None:
    out = run_fuzzer("tests.ttrpc.fuzz_ttrpc_decoder", tmp_path, seconds_env="TTRPC_FUZZ_SECONDS",
                     default_seconds=20)
    assert "Done" in out or "DONE" in out, out[-2000:]


if __name__ == "__main__":  # regenerate the committed files: python -m tests.ttrpc.test_ttrpc_misc
    for include, proto, committed in GENERATED:
        generate(include, proto, committed)


async def test_python_m_guest_ttrpc_proxy_forwards() -> None:
    import asyncio

    from guest.ttrpc import Client, Server
    from tools.gottrpc.echo import METHOD, SERVICE, EchoService, parse_response, request_bytes

    d = Path(tempfile.mkdtemp(prefix="ttrpc-m-"))
    server = Server(EchoService().handlers())
    up = await server.start(parse_address(f"unix://{d / 'agent.sock'}"))
    p = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "guest.ttrpc",
        "proxy",
        f"unix://{d / 'p.sock'}",
        str(up),
        cwd=REPO,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        for _ in range(100):
            if (d / "p.sock").exists():
                break
            await asyncio.sleep(0.05)
        c = await Client().connect(parse_address(f"unix://{d / 'p.sock'}"))
        assert parse_response(await c.call(SERVICE, METHOD, request_bytes("via-m"))).id == "via-m"
        await c.close()
    finally:
        p.kill()
        _, err = await p.communicate()
        await server.close()
        shutil.rmtree(d, ignore_errors=True)
    assert b"event=request service=ttrpcecho.AgentService method=Echo" in err


def test_sans_io_modules_never_import_asyncio() -> None:
    import ast

    for name in ("frames", "messages", "connection", "status", "errors", "address", "_eager"):
        tree = ast.parse((REPO / "guest/ttrpc" / f"{name}.py").read_text())
        imported = {
            a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
        }
        imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "asyncio" not in imported, name


def test_module_help_exits_zero_and_bad_arguments_name_the_subcommand() -> None:
    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "guest.ttrpc", *argv], cwd=REPO, capture_output=True,
                              text=True, timeout=60, check=False)

    shown = run("--help")
    assert shown.returncode == 0 and "proxy" in shown.stdout and "demo" in shown.stdout
    assert "`" not in shown.stdout
    bad = run("proxy", "unix:///tmp/x.sock")
    assert bad.returncode == 2 and bad.stderr.startswith("usage: python -m guest.ttrpc proxy ")
    bad = run("proxy", "nowhere", "unix:///tmp/x.sock")
    assert bad.returncode == 2 and "bad ttrpc address 'nowhere'" in bad.stderr
