"""Loopback facts shared by every server the tests start: the address they listen on and how a free port is found."""

from __future__ import annotations

import http.server
import random
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any, Final

#: Every server of the test bed listens here, never on a routable address.
HOST: Final = "127.0.0.1"


#: Where the kernel takes the source ports of outgoing connections.
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
#: How many ports below the ephemeral range the servers are placed in.
_SERVER_PORTS = 12_000
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def _server_port_range() -> range | None:
    """Ports just below the ephemeral range, or ``None`` where the range cannot be read or leaves no room."""
    try:
        low = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    start = max(1024, low - _SERVER_PORTS)
    return range(start, low) if low - start >= 1000 else None


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port free on ``HOST`` right now, never handed out before in this process.

    Taken below the kernel's ephemeral range: the OS's own pick (bind to port 0) comes from the range every
    outgoing connection also draws its source port from, so a sentinel's or a client's connection could take
    the port between this call and the server's bind, and the server would exit with "address in use".
    """
    ports = _server_port_range()
    with _handed_out_lock:
        for _ in range(200):
            if ports is None:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind((HOST, 0))
                    port = int(sock.getsockname()[1])
            else:
                port = random.choice(ports)
            if port not in _handed_out and _bindable(port):
                _handed_out.add(port)
                return port
    raise OSError(f"no free port on {HOST} after 200 tries")


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
