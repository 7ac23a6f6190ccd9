"""QEMU's machine protocol (QMP): a sans-IO core and a thin asyncio client.

QMP is JSON objects, one per line, over a stream socket. QEMU speaks first (the greeting with its
version and capabilities); the client must send ``qmp_capabilities`` before any other command.
Each command carries an ``id`` that QEMU repeats in its ``return`` or ``error`` reply; events
(``{"event": ...}``) can arrive between replies at any time. The core (:class:`QmpConnection`)
only turns bytes into messages and commands into bytes; :class:`QmpClient` moves them over a
unix socket. The pod VM uses it to hotplug disks (``blockdev-add`` + ``device_add``).

QEMU runs on the host side of the trust boundary with the shim, so its replies are not attacker
data in the confidential sense, but they are parsed strictly anyway: a line longer than
:data:`MAX_LINE` or one that is not a JSON object is a protocol error that closes the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ShimError

__all__ = [
    "MAX_LINE",
    "QmpClient",
    "QmpCommandError",
    "QmpConnection",
    "QmpError",
    "QmpEvent",
    "QmpGreeting",
    "QmpProtocolError",
    "QmpReply",
]

MAX_LINE = 1 << 20


class QmpError(ShimError):
    """Anything that went wrong talking to QEMU's QMP socket."""


class QmpProtocolError(QmpError):
    """QEMU sent something that is not QMP (what, and what was expected)."""

    def __init__(self, what: str, expected: str) -> None:
        super().__init__(f"QMP: {what} (expected {expected})")


class QmpCommandError(QmpError):
    """A command's ``error`` reply: QEMU's class and description."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        super().__init__(f"QMP {command}: {error_class}: {desc}")
        self.command, self.error_class, self.desc = command, error_class, desc


@dataclass(frozen=True, slots=True)
class QmpGreeting:
    version: dict[str, Any]
    capabilities: list[Any]


@dataclass(frozen=True, slots=True)
class QmpReply:
    id: int
    value: Any = None  # the ``return`` value
    error_class: str = ""  # set for an ``error`` reply
    desc: str = ""

    @property
    def ok(self) -> bool:
        return not self.error_class


@dataclass(frozen=True, slots=True)
class QmpEvent:
    name: str
    data: dict[str, Any] = field(default_factory=dict)


QmpMessage = QmpGreeting | QmpReply | QmpEvent


class QmpConnection:
    """The protocol state of one QMP session, without I/O.

    ``receive_data`` takes bytes from QEMU and returns the complete messages in them;
    ``command`` returns the id and the bytes to send. A reply to an id never sent, a second
    greeting or anything else out of order is a :class:`QmpProtocolError`.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._next_id = 1
        self._pending: dict[int, str] = {}
        self.greeted = False

    def command(self, name: str, arguments: dict[str, Any] | None = None) -> tuple[int, bytes]:
        if not self.greeted:
            raise QmpProtocolError(f"command {name} before QEMU's greeting", "the greeting first")
        cid = self._next_id
        self._next_id += 1
        self._pending[cid] = name
        msg: dict[str, Any] = {"execute": name, "id": cid}
        if arguments:
            msg["arguments"] = arguments
        return cid, json.dumps(msg, separators=(",", ":")).encode() + b"\r\n"

    def command_name(self, cid: int) -> str:
        return self._pending.get(cid, "?")

    def receive_data(self, data: bytes) -> list[QmpMessage]:
        self._buf += data
        out: list[QmpMessage] = []
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > MAX_LINE:
                    raise QmpProtocolError(f"a line longer than {MAX_LINE} bytes", "one JSON object per line")
                return out
            line = bytes(self._buf[:end]).strip()
            del self._buf[: end + 1]
            if len(line) > MAX_LINE:
                raise QmpProtocolError(f"a line longer than {MAX_LINE} bytes", "one JSON object per line")
            if line:
                out.append(self._message(line))

    def _message(self, line: bytes) -> QmpMessage:
        try:
            msg = json.loads(line)
        except ValueError:
            raise QmpProtocolError(f"undecodable line {line[:60]!r}", "a JSON object") from None
        if not isinstance(msg, dict):
            raise QmpProtocolError(f"a JSON {type(msg).__name__}", "a JSON object")
        if "QMP" in msg:
            greeting = msg["QMP"]
            if self.greeted or not isinstance(greeting, dict):
                raise QmpProtocolError("a second or malformed greeting", "one greeting at the start")
            self.greeted = True
            return QmpGreeting(greeting.get("version") or {}, list(greeting.get("capabilities") or []))
        if not self.greeted:
            raise QmpProtocolError(f"{sorted(msg)} before the greeting", "the greeting first")
        if "event" in msg:
            data = msg.get("data") or {}
            if not isinstance(msg["event"], str) or not isinstance(data, dict):
                raise QmpProtocolError("a malformed event", '{"event": NAME, "data": {...}}')
            return QmpEvent(msg["event"], data)
        cid = msg.get("id")
        if type(cid) is not int or cid not in self._pending:
            raise QmpProtocolError(f"a reply with id {cid!r}", "the id of a command in flight")
        del self._pending[cid]
        if "return" in msg:
            return QmpReply(cid, msg["return"])
        err = msg.get("error")
        if isinstance(err, dict):
            return QmpReply(cid, None, str(err.get("class") or "GenericError"), str(err.get("desc") or ""))
        raise QmpProtocolError(f"reply {cid} without return or error", "return or error")


class QmpClient:
    """One QMP session over QEMU's unix socket (``-qmp unix:PATH,server=on,wait=off``).

    Commands are sent one at a time (a lock), as Kata's runtime does; events are kept in a short
    list for callers that want them (``DEVICE_DELETED`` after ``device_del``).
    """

    def __init__(self) -> None:
        self._proto = QmpConnection()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self.events: list[QmpEvent] = []
        self.greeting: QmpGreeting | None = None

    async def connect(self, path: Path, within: float = 30.0) -> None:
        """Connect (retrying while QEMU creates the socket), read the greeting, negotiate."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            try:
                self._reader, self._writer = await asyncio.open_unix_connection(str(path), limit=MAX_LINE * 2)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if loop.time() > deadline:
                    raise QmpError(f"QMP socket {path}: QEMU did not listen within {within:.0f} s") from None
                await asyncio.sleep(0.05)
        while self.greeting is None:
            for msg in await self._read(deadline - loop.time()):
                if isinstance(msg, QmpGreeting):
                    self.greeting = msg
        await self.execute("qmp_capabilities", within=max(1.0, deadline - loop.time()))

    async def _read(self, within: float) -> list[QmpMessage]:
        assert self._reader is not None
        try:
            data = await asyncio.wait_for(self._reader.read(65536), max(within, 0.1))
        except TimeoutError:
            raise QmpError(f"QMP: no answer from QEMU within {max(within, 0.1):.0f} s") from None
        if not data:
            raise QmpError("QMP: QEMU closed the socket")
        return self._proto.receive_data(data)

    async def execute(self, name: str, arguments: dict[str, Any] | None = None, *,
                      within: float = 30.0) -> Any:
        """Run one command; its ``return`` value, or :class:`QmpCommandError`."""
        if self._writer is None:
            raise QmpError(f"QMP {name}: not connected")
        async with self._lock:
            cid, data = self._proto.command(name, arguments)
            self._writer.write(data)
            await self._writer.drain()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + within
            while True:
                for msg in await self._read(deadline - loop.time()):
                    if isinstance(msg, QmpEvent):
                        self.events = [*self.events[-31:], msg]
                    elif isinstance(msg, QmpReply) and msg.id == cid:
                        if not msg.ok:
                            raise QmpCommandError(name, msg.error_class, msg.desc)
                        return msg.value

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await self._writer.wait_closed()
            self._writer = None
