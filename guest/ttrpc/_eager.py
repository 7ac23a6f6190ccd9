"""Start a coroutine synchronously and hand it to a Task only if it actually suspends.

Python 3.12 has eager tasks for this; 3.11 does not. Most ttrpc handlers and interceptors finish without
ever waiting (an echo, a policy decision), and creating a Task for each costs about as much as the rest of
the request path, so the adapters run the first step inline. Until its first real suspension such a
coroutine runs with no current task: it must not enter `asyncio.timeout()` or a TaskGroup before its first
`await` of something that suspends (servers and proxies take `eager=False` for such code).
"""

from __future__ import annotations

from collections.abc import Awaitable, Coroutine, Generator
from types import CoroutineType
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_UNSET: Any = object()


class Resumed(Coroutine[Any, Any, T], Generic[T]):
    """A coroutine that already yielded `first`; the Task's first step returns that same value."""

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, T], first: Any) -> None:
        self._coro = coro
        self._first = first

    def send(self, value: Any) -> Any:
        first = self._first
        if first is not _UNSET:
            self._first = _UNSET
            return first
        return self._coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        self._first = _UNSET
        if val is None:
            return self._coro.throw(typ)
        return self._coro.throw(val)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, T]:
        # `yield from` by hand, so a Resumed can also be awaited (e.g. inside asyncio.timeout in a Task).
        value: Any = None
        exc: BaseException | None = None
        while True:
            try:
                yielded = self.send(value) if exc is None else self.throw(exc)
            except StopIteration as e:
                return e.value  # type: ignore[no-any-return]
            value, exc = None, None
            try:
                value = yield yielded
            except BaseException as e:
                exc = e


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


def as_coroutine(awaitable: Awaitable[T]) -> Coroutine[Any, Any, T]:
    """Handlers may return any awaitable; eager start needs a real coroutine."""
    if isinstance(awaitable, CoroutineType):
        return awaitable
    return _await(awaitable)
