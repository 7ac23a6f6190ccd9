"""Builds and runs the Go aTLS peer (tools/goatls) from Debian's golang-go, cached outside the repo."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GOATLS_SRC = REPO / "tools" / "goatls"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "confidential-guest"


def goatls_binary() -> Path:
    go = shutil.which("go")
    if go is None:
        pytest.skip("go (Debian golang-go) is not installed; see .ci/apt/coordinator.txt")
    digest = hashlib.sha256()
    for name in ("go.mod", "main.go"):
        digest.update((GOATLS_SRC / name).read_bytes())
    out = CACHE / f"goatls-{digest.hexdigest()[:16]}" / "goatls"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, GOPROXY="off", GOFLAGS="-mod=mod", GOCACHE=str(CACHE / "gocache"),
                   CGO_ENABLED="0")
        tmp = out.with_suffix(".tmp")
        subprocess.run([go, "build", "-o", str(tmp), "."], cwd=GOATLS_SRC, env=env, check=True)
        tmp.rename(out)
    return out
