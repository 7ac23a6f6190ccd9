"""A small CRI client (what kubelet calls) over containerd's gRPC socket, from tools/vm/cri/cri.proto.

The proto is compiled when first used (grpc_tools, a dev dependency) into a temporary directory, so no
generated code is committed for a test-only API."""

from __future__ import annotations

import atexit
import importlib
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]

from common.protoc import compile_protos

HERE = Path(__file__).resolve().parent
SERVICE = "/runtime.v1.RuntimeService/"
IMAGE_SERVICE = "/runtime.v1.ImageService/"
IMAGE_METHODS = frozenset({"PullImage", "ImageStatus", "ListImages", "RemoveImage", "ImageFsInfo"})
_module: Any = None


def messages() -> Any:
    global _module
    if _module is None:
        out = Path(tempfile.mkdtemp(prefix="cg-cri-proto-"))
        atexit.register(shutil.rmtree, out, True)
        compile_protos(["cri.proto"], out, repo_root=HERE)
        sys.path.insert(0, str(out))
        _module = importlib.import_module("cri_pb2")
    return _module


class CriClient:
    def __init__(self, socket: Path) -> None:
        # A runtime's error text travels in the grpc-message trailer; kata's policy denials are long.
        options = [("grpc.max_metadata_size", 1 << 20)]
        self.channel = grpc.insecure_channel(f"unix://{socket}", options=options)
        self.pb = messages()

    def call(self, method: str, request: Any, timeout: float = 300) -> Any:
        reply_type = getattr(self.pb, f"{method}Response")
        rpc = self.channel.unary_unary(
            (IMAGE_SERVICE if method in IMAGE_METHODS else SERVICE) + method,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=reply_type.FromString,
        )
        return rpc(request, timeout=timeout)

    def wait_ready(self, timeout: float = 60) -> None:
        """Poll Version until containerd's CRI plugin answers (it starts after containerd's socket)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.call("Version", self.pb.VersionRequest(), timeout=10)
                return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def close(self) -> None:
        self.channel.close()
