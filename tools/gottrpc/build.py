"""Build the Go ttrpc peers offline and cache them outside the repository.

Debian ships containerd/ttrpc 1.1.1 under /usr/share/gocode; with GO111MODULE=off and GOPATH pointing at
our sources plus that tree, `go build` needs no network. The binaries are cached under
/var/cache/confidential-guest/gottrpc/<key>/ where the key hashes our sources, the Go version and the
Debian package versions, so a change to any of them rebuilds; the build happens in a temporary directory
that is renamed into place, so a half-built cache entry never exists.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parent / "src"
GOCODE = Path("/usr/share/gocode")
DEBIAN_PACKAGES = ("golang-go", "golang-github-containerd-ttrpc-dev", "gogottrpc", "protobuf-compiler")


class GoUnavailableError(RuntimeError):
    """`go` (or protoc / protoc-gen-gogottrpc / Debian's ttrpc sources) is missing."""


@dataclass(frozen=True)
class GoPeers:
    server: Path
    client: Path


def go_cache_root(name: str) -> Path:
    """Where built Go peers are kept: the machine-wide cache if writable, else the user's."""
    system = Path("/var/cache/confidential-guest") / name
    try:
        system.mkdir(parents=True, exist_ok=True)
        if os.access(system, os.W_OK):
            return system
    except OSError:
        pass
    return Path.home() / ".cache" / "confidential-guest" / name


def _cache_root() -> Path:
    env = os.environ.get("GOTTRPC_CACHE")
    return Path(env) if env else go_cache_root("gottrpc")


def _tool_versions() -> str:
    parts = []
    for pkg in DEBIAN_PACKAGES:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
        parts.append(f"{pkg}={r.stdout.strip()}")
    r = subprocess.run(["go", "version"], capture_output=True, text=True)
    parts.append(r.stdout.strip())
    return "\n".join(parts)


def _key() -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in SRC.rglob("*") if p.is_file() and p.suffix in (".go", ".proto")):
        h.update(str(f.relative_to(SRC)).encode() + b"\0" + f.read_bytes() + b"\0")
    h.update(_tool_versions().encode())
    return h.hexdigest()[:24]


def check_toolchain() -> None:
    missing = [t for t in ("go", "protoc", "protoc-gen-gogottrpc") if shutil.which(t) is None]
    if not (GOCODE / "src/github.com/containerd/ttrpc").is_dir():
        missing.append(f"{GOCODE}/src/github.com/containerd/ttrpc (golang-github-containerd-ttrpc-dev)")
    if missing:
        raise GoUnavailableError(
            "missing: " + ", ".join(missing) + " (apt-get install " + " ".join(DEBIAN_PACKAGES) + ")"
        )


def build(cache_root: Path | None = None) -> GoPeers:
    check_toolchain()
    root = cache_root or _cache_root()
    dest = root / _key()
    peers = GoPeers(dest / "bin" / "ttrpc-server", dest / "bin" / "ttrpc-client")
    if peers.server.is_file() and peers.client.is_file():
        return peers
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        gopath = work / "gopath"
        shutil.copytree(SRC, gopath / "src")
        pb_dir = gopath / "src" / "peers" / "echopb"
        subprocess.run(
            [
                "protoc",
                "-I.",
                "-I/usr/include",
                "--gogottrpc_out=plugins=ttrpc,paths=source_relative:.",
                "echo.proto",
            ],
            cwd=pb_dir,
            check=True,
            capture_output=True,
            text=True,
        )
        env = dict(
            os.environ,
            GOPATH=f"{gopath}:{GOCODE}",
            GO111MODULE="off",
            GOPROXY="off",
            GOFLAGS="",
            GOCACHE=str(root / "gocache"),
            CGO_ENABLED="0",
        )
        for name in ("server", "client"):
            subprocess.run(
                ["go", "build", "-o", str(work / "bin" / f"ttrpc-{name}"), f"peers/{name}"],
                cwd=gopath,
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
        shutil.rmtree(gopath)
        try:
            work.rename(dest)
        except OSError:
            if not (peers.server.is_file() and peers.client.is_file()):  # lost a race to a parallel build
                raise
    except subprocess.CalledProcessError as e:
        raise GoUnavailableError(f"building Go peers failed: {e.cmd}: {e.stderr}") from e
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return peers


def main(argv: list[str] | None = None) -> int:
    try:
        peers = build()
    except GoUnavailableError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"server {peers.server}\nclient {peers.client}")
    return 0
