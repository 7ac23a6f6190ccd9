"""GetIPTables / SetIPTables with kata-agent's semantics: ``iptables-save`` / ``iptables-restore``.

kata-agent runs ``{ip,ip6}tables-save`` (``/usr/sbin`` first, then ``/sbin``) and answers with its
stdout, or feeds the request's data to ``{ip,ip6}tables-restore --wait`` and answers with that
tool's stdout. If the tool is not in the image (the pod-VM image carries no iptables), the spawn fails
and kata answers INTERNAL with Rust's ``Debug`` of the I/O error, which is what happens here too:
``Os { code: 2, kind: NotFound, message: "No such file or directory" }``. The rules come from the
host, which the policy must allow (genpolicy denies both by default); a restore that fails leaves
the tables as they were (iptables-restore commits each table atomically).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from guest.ttrpc import Code

from .errors import AgentError, InvalidRequestError
from .processes import Reaper

__all__ = ["MAX_RULES_BYTES", "get_ip_tables", "set_ip_tables", "tool_path"]

MAX_RULES_BYTES = 1 << 20
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
_ERRNO_KIND = {errno.ENOENT: "NotFound", errno.EACCES: "PermissionDenied", errno.EPERM: "PermissionDenied"}


def tool_path(name: str, is_ipv6: bool) -> Path:
    """kata-agent's choice: the /usr/sbin binary if it exists, else the /sbin one (which may not)."""
    tool = f"ip6tables-{name}" if is_ipv6 else f"iptables-{name}"
    usr = Path("/usr/sbin") / tool
    return usr if usr.exists() else Path("/sbin") / tool


def _spawn_error(e: OSError) -> AgentError:
    kind = _ERRNO_KIND.get(e.errno or 0, "Other")
    return AgentError(f'Os {{ code: {e.errno}, kind: {kind}, message: "{os.strerror(e.errno or 0)}" }}',
                      code=Code.INTERNAL)


async def _run(reaper: Reaper, argv: list[str], stdin: bytes) -> bytes:
    out = os.memfd_create("iptables-out", os.MFD_CLOEXEC)
    err = os.memfd_create("iptables-err", os.MFD_CLOEXEC)
    data = os.memfd_create("iptables-in", os.MFD_CLOEXEC)
    try:
        os.write(data, stdin)
        os.lseek(data, 0, os.SEEK_SET)
        actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate((data, out, err))]
        try:
            pid = os.posix_spawn(argv[0], argv, _ENV, file_actions=actions)
        except OSError as e:
            raise _spawn_error(e) from None
        code = await reaper.wait(pid)
        output = os.pread(out, MAX_RULES_BYTES, 0)
        if code != 0:
            detail = os.pread(err, 4096, 0).decode(errors="replace").strip()
            raise AgentError(f"{argv[0]} failed with status {code}: {detail}", code=Code.INTERNAL)
        return output
    finally:
        for fd in (out, err, data):
            os.close(fd)


async def get_ip_tables(reaper: Reaper, is_ipv6: bool) -> bytes:
    return await _run(reaper, [str(tool_path("save", is_ipv6))], b"")


async def set_ip_tables(reaper: Reaper, is_ipv6: bool, data: bytes) -> bytes:
    if len(data) > MAX_RULES_BYTES:
        raise InvalidRequestError("data", f"<{len(data)} bytes>", f"at most {MAX_RULES_BYTES} bytes of rules")
    if b"\0" in data:
        raise InvalidRequestError("data", "<rules with a NUL byte>", "iptables-save text")
    return await _run(reaper, [str(tool_path("restore", is_ipv6)), "--wait"], data)
