"""Evidence from configfs-tsm (/sys/kernel/config/tsm/report), for SNP reports and TDX quotes.

One fresh directory per request, always removed (the kernel's configfs-tsm ABI):

    mkdir <root>/<unique>          the kernel creates the attribute files
    read  provider                 "sev_guest\\n" or "tdx_guest\\n"; must match the platform asked for
    read  generation               g0
    write privlevel                SNP only, when a VMPL is requested
    write inblob                   exactly 64 bytes
    read  outblob                  the report or quote (generated on read)
    read  auxblob                  SNP only: the host's certificate table (may be empty)
    read  generation               must equal g0 + number of writes, else someone raced us
    rmdir <root>/<unique>

File operations go through a small `ConfigfsOps` object so tests can drive the exact flow
against a directory tree with configfs behaviour.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
from pathlib import Path
from typing import Protocol

from ..errors import GenerationRaceError, ProviderError
from ..evidence import Evidence, Platform, pad_report_data

TSM_REPORT_ROOT = Path("/sys/kernel/config/tsm/report")
PROVIDER_NAMES: dict[str, Platform] = {"sev_guest": "snp", "tdx_guest": "tdx"}
MAX_OUTBLOB = 16 << 20
_log = logging.getLogger(__name__)


class ConfigfsOps(Protocol):
    def mkdir(self, path: Path) -> None: ...
    def rmdir(self, path: Path) -> None: ...
    def read(self, path: Path) -> bytes: ...
    def write(self, path: Path, data: bytes) -> None: ...
    def exists(self, path: Path) -> bool: ...


class OsConfigfsOps:
    """Plain syscalls: configfs wants each attribute written in a single write()."""

    def mkdir(self, path: Path) -> None:
        os.mkdir(path)

    def rmdir(self, path: Path) -> None:
        os.rmdir(path)

    def read(self, path: Path) -> bytes:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks = []
            total = 0
            while True:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    break
                total += len(chunk)
                if total > MAX_OUTBLOB:
                    raise ProviderError(f"{path.name} is larger than {MAX_OUTBLOB} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def write(self, path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            if os.write(fd, data) != len(data):
                raise ProviderError(f"short write to {path.name}")
        finally:
            os.close(fd)

    def exists(self, path: Path) -> bool:
        return path.exists()


class ConfigfsTsmProvider:
    def __init__(
        self,
        platform: Platform,
        *,
        root: Path = TSM_REPORT_ROOT,
        privlevel: int | None = None,
        ops: ConfigfsOps | None = None,
    ) -> None:
        if privlevel is not None and (platform != "snp" or not 0 <= privlevel <= 3):
            raise ValueError("privlevel is an SNP VMPL 0..3")
        self._platform: Platform = platform
        self._root = Path(root)
        self._privlevel = privlevel
        self._ops: ConfigfsOps = ops or OsConfigfsOps()

    @property
    def platform(self) -> Platform:
        return self._platform

    def _entry(self) -> Path:
        return self._root / f"attestation-{os.getpid()}-{secrets.token_hex(8)}"

    def get_evidence(self, report_data: bytes) -> Evidence:
        inblob = pad_report_data(report_data)
        entry = self._entry()
        ops = self._ops
        try:
            ops.mkdir(entry)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                raise ProviderError("configfs-tsm has no provider registered (ENXIO)") from None
            raise ProviderError(f"cannot create {entry}: {exc.strerror}") from None
        try:
            return self._run(entry, inblob)
        except OSError as exc:
            raise ProviderError(
                f"configfs-tsm request failed at {exc.filename or entry}: {exc.strerror or exc}"
            ) from None
        finally:
            try:
                ops.rmdir(entry)
            except OSError as exc:
                raise ProviderError(f"cannot remove {entry}: {exc.strerror}") from None

    def _run(self, entry: Path, inblob: bytes) -> Evidence:
        ops = self._ops
        name = ops.read(entry / "provider").decode("ascii", "replace").strip()
        if PROVIDER_NAMES.get(name) != self._platform:
            raise ProviderError(f"configfs-tsm provider is {name!r}, expected one for {self._platform}")
        gen0 = _generation(ops.read(entry / "generation"))
        writes = 0
        if self._privlevel is not None:
            ops.write(entry / "privlevel", f"{self._privlevel}\n".encode())
            writes += 1
        ops.write(entry / "inblob", inblob)
        writes += 1
        out = ops.read(entry / "outblob")
        aux = b""
        if self._platform == "snp" and ops.exists(entry / "auxblob"):
            aux = ops.read(entry / "auxblob")
        gen1 = _generation(ops.read(entry / "generation"))
        if gen1 != gen0 + writes:
            _log.error(
                "event=tsm_generation_race entry=%s expected=%d got=%d", entry.name, gen0 + writes, gen1
            )
            raise GenerationRaceError(
                f"configfs-tsm generation is {gen1}, expected {gen0 + writes}: "
                "another writer changed the request"
            )
        if not out:
            raise ProviderError("configfs-tsm returned an empty outblob")
        return Evidence(platform=self._platform, report=out, cert_table=aux, provider=f"configfs-tsm/{name}")


def _generation(raw: bytes) -> int:
    try:
        return int(raw.decode("ascii").strip())
    except ValueError:
        raise ProviderError(f"unreadable configfs-tsm generation {raw[:20]!r}") from None


def probe_provider(root: Path = TSM_REPORT_ROOT, ops: ConfigfsOps | None = None) -> Platform | None:
    """Which platform configfs-tsm serves here, or None (no configfs-tsm or no provider)."""
    ops = ops or OsConfigfsOps()
    if not ops.exists(root):
        return None
    entry = root / f"probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        ops.mkdir(entry)
    except OSError:
        return None
    try:
        name = ops.read(entry / "provider").decode("ascii", "replace").strip()
    except OSError:
        return None
    finally:
        with contextlib.suppress(OSError):
            ops.rmdir(entry)
    return PROVIDER_NAMES.get(name)
