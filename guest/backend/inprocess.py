"""The ttrpc side of the builtin agent: policy interceptor, then the backend, in one process.

Kept free of the backend's own modules (containers, storages, guest.storage, the OCI runtime
driver): the agent listens as soon as the policy is in force, and :class:`DeferredBackend` imports
and builds the backend off the event loop meanwhile. A request that needs the backend waits for
it; Health is answered at once, as the runtime's first check needs no backend.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from guest.api import RPCS
from guest.protocols import health_pb2
from guest.ttrpc import Answer, Code, Handler, Request, Response, Status, TtrpcError

if TYPE_CHECKING:
    from .service import AgentBackend

__all__ = ["AGENT_VERSION", "BACKEND_MODULES", "Backend", "DeferredBackend", "InProcessAgent", "health_reply",
           "prepare_backend"]

log = logging.getLogger("guest.backend")

AGENT_VERSION = "0.1.0-confidential-guest"
# What DeferredBackend imports on its thread before the backend is built on the event loop.
BACKEND_MODULES = ("guest.backend.service",)


def prepare_backend(modules: Sequence[str] = BACKEND_MODULES) -> None:
    """On the loader thread: the kernel modules containers need (the image's deferred list, see
    guest.backend.kmod), then the backend's Python modules."""
    from .kmod import load_deferred_modules

    load_deferred_modules()
    for name in modules:
        importlib.import_module(name)


def health_reply(method: str) -> Response:
    if method == "Version":
        reply: Any = health_pb2.VersionCheckResponse(grpc_version="ttrpc", agent_version=AGENT_VERSION)
    else:
        reply = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
    return Response(Status(Code.OK), reply.SerializeToString())


class Backend(Protocol):
    async def serve(self, request: Request) -> Response: ...


class DeferredBackend:
    """An :class:`~guest.backend.service.AgentBackend` made after the agent listens.

    :meth:`load` runs ``prepare`` on a worker thread (imports, kernel modules; the event loop keeps
    answering), then calls ``build`` and the backend's ``start`` on the loop. Requests before that
    wait for it; a failed load fails every request with its reason (fail closed, the agent never
    runs half a backend)."""

    def __init__(self, build: Callable[[], AgentBackend],
                 prepare: Callable[[], None] = prepare_backend) -> None:
        self._build = build
        self._prepare = prepare
        self._task: asyncio.Task[AgentBackend] | None = None

    def load(self) -> asyncio.Task[AgentBackend]:
        if self._task is None:
            self._task = asyncio.ensure_future(self._load())
        return self._task

    async def _load(self) -> AgentBackend:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.to_thread(self._prepare)
        backend = self._build()
        await backend.start()
        log.info("event=backend_ready seconds=%.3f", loop.time() - t0)
        return backend

    async def backend(self) -> AgentBackend:
        return await asyncio.shield(self.load())

    async def serve(self, request: Request) -> Response:
        if request.service == "grpc.Health":
            return health_reply(request.method)
        try:
            backend = await self.backend()
        except Exception as exc:  # every request then carries the reason
            reason = f"{type(exc).__name__}: {exc}"
            log.error("event=backend_failed error=%r", reason)
            return Response(Status(Code.INTERNAL, f"agent backend failed to start: {reason}"))
        return await backend.serve(request)


class InProcessAgent:
    """ttrpc handlers: policy interceptor → backend, in one process."""

    def __init__(self, interceptor: Callable[[Request], Awaitable[Any]], backend: Backend) -> None:
        self.interceptor = interceptor
        self.backend = backend

    def handlers(self) -> dict[tuple[str, str], Handler]:
        return {key: self.handle for key in RPCS}

    async def handle(self, request: Request) -> bytes:
        decision = await self.interceptor(request)
        if type(decision) is Answer:
            response = decision.response
        else:
            response = await self.backend.serve(decision.request)
            if decision.on_response is not None:
                response = await decision.on_response(response)
        if response.status.ok:
            return response.payload
        raise TtrpcError(response.status)
