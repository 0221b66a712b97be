"""Loopback facts shared by every server the tests start: the address they listen on and how a free port is found."""

from __future__ import annotations

import http.server
import socket
import subprocess
import threading
from typing import Any, Final

#: Every server of the test bed listens here, never on a routable address.
HOST: Final = "127.0.0.1"


def free_port() -> int:
    """A port free on ``HOST`` right now (the OS's pick); a server may still lose it to another before binding."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def send_json(handler: http.server.BaseHTTPRequestHandler, status: int, body: bytes) -> None:
    """Answer a request with ``body`` as JSON, sized, as the real APIs the stand-ins mirror do."""
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """A request handler that keeps the test output clean of per-request log lines."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class LoopbackServer:
    """An HTTP server on ``HOST`` (a port the OS picks), served by a thread while the ``with`` block runs."""

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self._server = http.server.ThreadingHTTPServer((HOST, 0), handler)
        self.address = f"http://{HOST}:{self._server.server_address[1]}"
        # A short poll: shutdown() waits for it.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def stop(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM a server this test bed started, SIGKILL it after 10 s; nothing if it has exited."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
