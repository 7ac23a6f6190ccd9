"""GetDiagnosticData: a container's termination log, the one log type kata-agent serves.

With no shared filesystem the kubelet's ``terminationMessagePath`` file is a CopyFile'd file bind
mounted into the container; the container writes its last words there and the runtime asks for them
when it stops the container. The mount is found in the container's own spec (its destination is the
``io.kubernetes.container.terminationMessagePath`` annotation, default ``/dev/termination-log``), its
source must be an agent-provided file below the shared directory, it is opened without following
links and must be a regular file; at most 4 KiB are returned (the kubelet's own cap), "" when there is
no such mount or file.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Any

from .errors import InvalidRequestError
from .layout import Layout

__all__ = ["TERMINATION_LOG", "check_log_type", "termination_log"]

TERMINATION_LOG = "termination_log"
MAX_TERMINATION_LOG = 4096
_PATH_ANNOTATION = "io.kubernetes.container.terminationMessagePath"
_DEFAULT_PATH = "/dev/termination-log"
_SHARED_IN_SPEC = Path("/run/kata-containers/shared/containers")  # how bind sources name CopyFile's tree


def termination_log(spec: dict[str, Any], layout: Layout) -> str:
    annotations = spec.get("annotations") or {}
    destination = annotations.get(_PATH_ANNOTATION) or _DEFAULT_PATH
    if not isinstance(destination, str) or not destination.startswith("/"):
        raise InvalidRequestError("annotation " + _PATH_ANNOTATION, destination, "an absolute path")
    source = None
    for m in spec.get("mounts") or []:
        if m.get("destination") == destination and m.get("type") == "bind":
            source = m.get("source")
    if not isinstance(source, str):
        return ""
    named = Path(os.path.normpath(source))
    if not named.is_relative_to(_SHARED_IN_SPEC) or named == _SHARED_IN_SPEC:
        return ""  # not a file this agent provided: never read
    path = layout.shared / named.relative_to(_SHARED_IN_SPEC)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        data = os.read(fd, MAX_TERMINATION_LOG)
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    return data.decode("utf-8", errors="replace")


def check_log_type(log_type: str) -> None:
    if log_type != TERMINATION_LOG:
        raise InvalidRequestError("log_type", log_type, f"{TERMINATION_LOG!r}")
