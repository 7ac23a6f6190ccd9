"""The demo's frontend: GET / reads a greeting from the store through the mesh proxy's egress
listener (mTLS to the store's pod) and answers with it; PUT /greeting writes it. stdlib only."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STORE = os.environ.get("STORE_URL", "http://127.137.0.1:8081")  # the mesh egress listener
TIMEOUT = 10.0


class Handler(BaseHTTPRequestHandler):
    def _reply(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._reply(200, b"ok\n")
            return
        try:
            with urllib.request.urlopen(f"{STORE}/kv/greeting", timeout=TIMEOUT) as resp:
                greeting = resp.read()
        except urllib.error.HTTPError as exc:
            greeting = f"(store answered {exc.code})".encode()
        except OSError as exc:
            self._reply(502, f"store unreachable: {exc}\n".encode())
            return
        self._reply(200, b"frontend says: " + greeting + b"\n")

    def do_PUT(self) -> None:
        length = int(self.headers.get("Content-Length", "0") or "0")
        body = self.rfile.read(min(length, 64 * 1024))
        request = urllib.request.Request(f"{STORE}/kv/greeting", data=body, method="PUT")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT):
                pass
        except OSError as exc:
            self._reply(502, f"store unreachable: {exc}\n".encode())
            return
        self._reply(204, b"")

    def log_message(self, format: str, *args: object) -> None:
        print(f"component=frontend {format % args}", flush=True)


def main() -> None:
    port = int(os.environ.get("FRONTEND_PORT", "8080"))
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
