"""Host-EROFS image mode: the container's image layers from containerd as verity-protected erofs disks.

containerd knows which image a container was made from; the shim asks it (its own client ``ctr``,
the same binary family as the publish binary) for the container record, the image's manifest and
each layer blob, checks every blob against its digest and size, and turns each layer into a
read-only erofs image with its dm-verity tree (image.layers, cached per layer digest). The guest maps
each layer only with the root hash its measured policy pins, so nothing here is trusted by the VM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import FailedPreconditionError, InvalidInputError, ShimError

if TYPE_CHECKING:
    from oci import Digest

__all__ = ["ContainerdImages", "ImageLayers", "LayerDisk", "fetch_layers"]

log = logging.getLogger("runtime.layers")

CTR_TIMEOUT = 60.0
MAX_JSON = 4 << 20
MAX_LAYER = 8 << 30


@dataclass(frozen=True)
class LayerDisk:
    """A built layer image and the storage options that name its verity parameters."""

    path: str
    options: tuple[str, ...]


@dataclass(frozen=True)
class ImageLayers:
    image: str  # name@digest of the manifest
    layers: tuple[LayerDisk, ...]


FETCH_TIMEOUT = 600.0


async def fetch_layers(ctr: str, address: str, namespace: str, cache: Path, container_id: str) -> ImageLayers:
    """The layers of ``container_id``'s image, prepared in a child process: the image and OCI code
    (and their memory) stay out of the long-running shim daemon."""
    argv = [sys.executable, "-P", "-m", "runtime.layers", ctr, address, namespace, str(cache), container_id]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), FETCH_TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise FailedPreconditionError(
            f"preparing the image layers took more than {FETCH_TIMEOUT:.0f}s"
        ) from None
    if proc.returncode != 0:
        lines = err.decode(errors="replace").strip().splitlines()
        raise FailedPreconditionError(lines[-1] if lines else f"layer preparation exited {proc.returncode}")
    doc = json.loads(out)
    return ImageLayers(doc["image"], tuple(LayerDisk(x["path"], tuple(x["options"])) for x in doc["layers"]))


class ContainerdImages:
    def __init__(self, ctr: str, address: str, namespace: str, cache: Path) -> None:
        self.ctr, self.address, self.namespace, self.cache = ctr, address, namespace, cache

    async def _run(self, *args: str, stdout: int | None = None) -> bytes:
        argv = [self.ctr, "--address", self.address, "--namespace", self.namespace, *args]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=stdout if stdout is not None else asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), CTR_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise FailedPreconditionError(
                f"containerd did not answer {' '.join(args[:2])} in {CTR_TIMEOUT:.0f}s"
            ) from None
        if proc.returncode != 0:
            raise FailedPreconditionError(
                f"containerd: {' '.join(args[:2])}: {err.decode(errors='replace')[-300:]}"
            )
        return out or b""

    async def _json(self, digest: Digest, size: int | None = None) -> dict[str, Any]:
        data = await self._run("content", "get", str(digest))
        if len(data) > MAX_JSON:
            raise InvalidInputError("manifest", str(digest), f"at most {MAX_JSON} bytes")
        if not digest.matches(data) or (size is not None and len(data) != size):
            raise InvalidInputError("manifest", str(digest), "content matching its digest and size")
        doc = json.loads(data)
        if not isinstance(doc, dict):
            raise InvalidInputError("manifest", str(digest), "a JSON object")
        return doc

    async def layers_of(self, container_id: str) -> ImageLayers:
        from oci import Digest, OciError
        from oci.mediatypes import INDEX_TYPES, LAYER_COMPRESSION, MANIFEST_TYPES

        info = json.loads(await self._run("containers", "info", container_id))
        image = info.get("Image", "") if isinstance(info, dict) else ""
        if not isinstance(image, str) or not image:
            raise FailedPreconditionError(f"container {container_id} has no image in containerd")
        listing = (await self._run("images", "ls", f"name=={image}")).decode().splitlines()
        target = next((line.split()[2] for line in listing[1:] if line.split()[:1] == [image]), "")
        try:
            digest = Digest.parse(target)
        except OciError:
            raise FailedPreconditionError(f"image {image} not found in containerd") from None
        doc = await self._json(digest)
        if doc.get("mediaType") in INDEX_TYPES or "manifests" in doc:
            chosen = next(
                (
                    m
                    for m in doc.get("manifests", [])
                    if isinstance(m, dict)
                    and (m.get("platform") or {}).get("os") == "linux"
                    and (m.get("platform") or {}).get("architecture") == "amd64"
                ),
                None,
            )
            if chosen is None:
                raise FailedPreconditionError(f"image {image} has no linux/amd64 manifest")
            digest = Digest.parse(chosen.get("digest"))
            doc = await self._json(digest, int(chosen.get("size", 0)))
        if doc.get("mediaType", "") not in MANIFEST_TYPES and "layers" not in doc:
            raise InvalidInputError("manifest", str(digest), "an image manifest")
        built = []
        for i, layer in enumerate(doc.get("layers", [])):
            media = layer.get("mediaType", "") if isinstance(layer, dict) else ""
            if media not in LAYER_COMPRESSION:
                raise InvalidInputError(f"layer {i} media type", media, "an OCI/Docker layer tar")
            built.append(
                await self._layer(
                    Digest.parse(layer.get("digest")), int(layer.get("size", -1)), LAYER_COMPRESSION[media]
                )
            )
        return ImageLayers(f"{image.split(':')[0].split('@')[0]}@{digest}", tuple(built))

    async def _layer(self, digest: Digest, size: int, compression: str) -> LayerDisk:
        from image.layers import build_layer_image
        from oci import LayerSource, OciError

        if not 0 <= size <= MAX_LAYER:
            raise InvalidInputError("layer size", size, f"0..{MAX_LAYER}")
        self.cache.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".blob-", dir=self.cache)
        try:
            await self._run("content", "get", str(digest), stdout=fd)
            os.close(fd)
            fd = -1
            await asyncio.to_thread(_verify, Path(tmp), digest, size)
            source = LayerSource(str(digest), compression, Path(tmp))
            built = await asyncio.to_thread(build_layer_image, source, self.cache)
            return LayerDisk(built.path, tuple(built.options()))
        except OciError as e:
            raise InvalidInputError("layer", str(digest), f"a blob matching its descriptor ({e})") from None
        finally:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _verify(path: Path, digest: Digest, size: int) -> None:
    from oci import DigestVerifier

    verifier = DigestVerifier(digest, size)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            verifier.update(chunk)
    verifier.finish()


def main(argv: list[str]) -> int:
    """``python -m runtime.layers CTR ADDRESS NAMESPACE CACHE CONTAINER_ID``: JSON of the layers."""
    from dataclasses import asdict

    ctr, address, namespace, cache, container_id = argv
    try:
        result = asyncio.run(ContainerdImages(ctr, address, namespace, Path(cache)).layers_of(container_id))
    except ShimError as e:
        print(e.message, file=sys.stderr)
        return 1
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
