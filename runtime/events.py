"""Task events to containerd through its publish binary, in order.

Each event is a ``google.protobuf.Any`` (type URL = the message's full name, as containerd's
typeurl registry names it) written to the stdin of
``<publish-binary> --address <containerd socket> publish --topic /tasks/<kind> --namespace <ns>``.
Events are sent one at a time from a queue, so TaskExit never overtakes TaskStart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from google.protobuf import any_pb2
from google.protobuf.message import Message

from .protocols import events_pb2

__all__ = ["TOPICS", "Publisher"]

log = logging.getLogger("runtime.events")

TOPICS: dict[type[Message], str] = {
    events_pb2.TaskCreate: "/tasks/create",
    events_pb2.TaskStart: "/tasks/start",
    events_pb2.TaskExit: "/tasks/exit",
    events_pb2.TaskDelete: "/tasks/delete",
    events_pb2.TaskOOM: "/tasks/oom",
    events_pb2.TaskExecAdded: "/tasks/exec-added",
    events_pb2.TaskExecStarted: "/tasks/exec-started",
}
PUBLISH_TIMEOUT = 10.0


def as_any(event: Message) -> bytes:
    return any_pb2.Any(
        type_url=event.DESCRIPTOR.full_name, value=event.SerializeToString()
    ).SerializeToString()


class Publisher:
    def __init__(self, binary: str, address: str, namespace: str) -> None:
        self.binary, self.address, self.namespace = binary, address, namespace
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.sent: list[str] = []

    def publish(self, event: Message) -> None:
        topic = TOPICS[type(event)]
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        self._queue.put_nowait((topic, as_any(event)))

    async def _run(self) -> None:
        while True:
            topic, data = await self._queue.get()
            try:
                await self._send(topic, data)
            finally:
                self._queue.task_done()

    async def _send(self, topic: str, data: bytes) -> None:
        if not self.binary or not self.address:
            return
        argv = [
            self.binary,
            "--address",
            self.address,
            "publish",
            "--topic",
            topic,
            "--namespace",
            self.namespace,
        ]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                _, err = await asyncio.wait_for(proc.communicate(data), PUBLISH_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                log.warning("event=publish_timeout topic=%s", topic)
                return
            if proc.returncode != 0:
                log.warning("event=publish_failed topic=%s rc=%s err=%r", topic, proc.returncode, err[-300:])
            else:
                self.sent.append(topic)
        except OSError as e:
            log.warning("event=publish_failed topic=%s error=%r", topic, e)

    async def drain(self, timeout: float = 15.0) -> None:  # noqa: ASYNC109
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)
