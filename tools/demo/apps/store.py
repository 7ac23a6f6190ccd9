"""The demo's backend: a tiny key-value store over HTTP (GET/PUT /kv/<key>), stdlib only.

It listens on every address of its pod: the mesh proxy's TPROXY rules steer every inbound connection
to the store's port through the proxy's mTLS ingress, which connects on to the pod's own address.
"""

from __future__ import annotations

import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEY = re.compile(r"^/kv/([A-Za-z0-9_.-]{1,64})$")
MAX_VALUE = 64 * 1024
_data: dict[str, bytes] = {}
_lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def _reply(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        m = KEY.match(self.path)
        if self.path == "/healthz":
            self._reply(200, b"ok\n")
        elif m is None:
            self._reply(404, b"no such key\n")
        else:
            with _lock:
                value = _data.get(m.group(1))
            self._reply(200, value) if value is not None else self._reply(404, b"no such key\n")

    def do_PUT(self) -> None:
        m = KEY.match(self.path)
        length = int(self.headers.get("Content-Length", "0") or "0")
        if m is None or not 0 <= length <= MAX_VALUE:
            self._reply(400, b"PUT /kv/<key> with at most 64 KiB\n")
            return
        value = self.rfile.read(length)
        with _lock:
            _data[m.group(1)] = value
        self._reply(204, b"")

    def log_message(self, format: str, *args: object) -> None:
        print(f"component=store {format % args}", flush=True)


def main() -> None:
    port = int(os.environ.get("STORE_PORT", "8081"))
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
