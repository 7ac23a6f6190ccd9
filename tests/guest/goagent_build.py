"""Build the Go agent-API ttrpc client (tests/guest/goagent) offline, cached outside the repository.

Our .proto files are compiled for Go with Debian's protoc-gen-gogottrpc (gogo protobuf + containerd
ttrpc, as in Debian's golang-github-containerd-ttrpc-dev), in GOPATH mode without network. gogo's
generator predates proto3 `optional`, so the Go copy of agent.proto drops that keyword (it only affects
the MemAgent* configs, which these tests do not send). The binary is cached under
/var/cache/confidential-guest/goagent/<key> (key: sources, protos, tool versions); the build happens in
a temporary directory renamed into place.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tools.gottrpc.build import go_cache_root

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SRC = HERE / "goagent" / "src"
PROTOS = REPO / "guest" / "protocols"
GOCODE = Path("/usr/share/gocode")
GO_PACKAGE = {
    "types": "agenttypes", "agent": "agentpb", "oci": "agentpb", "csi": "agentpb", "health": "agentpb",
}


class GoUnavailableError(RuntimeError):
    """The Go toolchain, protoc, protoc-gen-gogottrpc or Debian's ttrpc/gogo sources are missing."""


def _check() -> None:
    missing = [t for t in ("go", "protoc", "protoc-gen-gogottrpc") if shutil.which(t) is None]
    for path in ("src/github.com/containerd/ttrpc", "src/github.com/gogo/protobuf/jsonpb"):
        if not (GOCODE / path).is_dir():
            missing.append(str(GOCODE / path))
    if not Path("/usr/include/google/protobuf/empty.proto").is_file():
        missing.append("/usr/include/google/protobuf/empty.proto")
    if missing:
        raise GoUnavailableError("missing: " + ", ".join(missing))


def _key() -> str:
    h = hashlib.sha256()
    for f in sorted([*SRC.rglob("*.go"), *PROTOS.glob("*.proto")]):
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    for cmd in (["go", "version"], ["protoc", "--version"]):
        h.update(subprocess.run(cmd, capture_output=True, text=True).stdout.encode())
    return h.hexdigest()[:24]


def build() -> Path:
    """Return the path of the built client, building it if needed."""
    _check()
    root = go_cache_root("goagent")
    binary = root / _key() / "agentclient"
    if binary.is_file():
        return binary
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        protos = work / "protos" / "guest" / "protocols"
        protos.mkdir(parents=True)
        for name in GO_PACKAGE:
            text = (PROTOS / f"{name}.proto").read_text()
            (protos / f"{name}.proto").write_text(text.replace("    optional ", "    "))
        mapping = ",".join(f"Mguest/protocols/{n}.proto={p}" for n, p in GO_PACKAGE.items())
        mapping += ",Mgoogle/protobuf/empty.proto=github.com/gogo/protobuf/types"
        gen = work / "gen"
        gen.mkdir()
        for group in (["types"], ["agent", "oci", "csi", "health"]):
            subprocess.run(
                ["protoc", "-I.", "-I/usr/include", f"--gogottrpc_out=plugins=ttrpc,{mapping}:{gen}",
                 *[f"guest/protocols/{n}.proto" for n in group]],
                cwd=work / "protos", check=True, capture_output=True, text=True,
            )
        gopath = work / "gopath"
        shutil.copytree(SRC, gopath / "src")
        for name, package in GO_PACKAGE.items():
            dest = gopath / "src" / package
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy(gen / "guest" / "protocols" / f"{name}.pb.go", dest)
        env = dict(os.environ, GOPATH=f"{gopath}:{GOCODE}", GO111MODULE="off", GOPROXY="off", GOFLAGS="",
                   GOCACHE=str(root / "gocache"), CGO_ENABLED="0")
        out = work / "out"
        subprocess.run(["go", "build", "-o", str(out / "agentclient"), "agentclient"],
                       cwd=gopath, env=env, check=True, capture_output=True, text=True)
        try:
            out.rename(binary.parent)
        except OSError:
            if not binary.is_file():
                raise
    except subprocess.CalledProcessError as exc:
        raise GoUnavailableError(f"building the Go client failed: {exc.cmd}: {exc.stderr}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return binary
