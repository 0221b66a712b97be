"""Loopback facts shared by every server the tests start: the address they listen on and how a free port is found."""

from __future__ import annotations

import socket
from typing import Final

#: Every server of the test bed listens here, never on a routable address.
HOST: Final = "127.0.0.1"


def free_port() -> int:
    """A port free on ``HOST`` right now (the OS's pick); a server may still lose it to another before binding."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])
