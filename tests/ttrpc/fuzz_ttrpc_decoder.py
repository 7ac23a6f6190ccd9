"""atheris fuzz target for the sans-IO decoder (both roles), run by test_ttrpc_misc.py for a bounded time.

    python tests/ttrpc/fuzz_ttrpc_decoder.py -max_total_time=20

Invariant (as h11's fuzz target): arbitrary bytes, split arbitrarily, only ever produce events; any other
exception is a bug. The replies the server side would send must be encodable.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from guest.ttrpc import NEED_DATA, Call, Closed, Connection, Rejected, Reply, Role


def one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    role = Role.SERVER if data[0] & 1 else Role.CLIENT
    limit = 256 + (data[1] * 37) % 4096
    body = data[2:]
    conn = Connection(role, max_message_size=limit)
    replier = Connection(Role.SERVER, max_message_size=limit)
    step = 1 + data[0] % 17
    for i in range(0, len(body), step):
        conn.receive_data(body[i : i + step])
        while (ev := conn.next_event()) is not NEED_DATA:
            if isinstance(ev, Rejected):
                replier.send(ev)
            elif isinstance(ev, Call):
                replier.send_ok(ev.stream_id, ev.request.payload)
            elif not isinstance(ev, Reply):
                raise AssertionError(f"unexpected event {ev!r}")
    conn.receive_data(b"")
    while (ev := conn.next_event()) is not NEED_DATA:
        if isinstance(ev, Closed):
            break
    assert conn.buffered <= len(body)


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
