"""The test bed's loopback ports: out of the range outgoing connections draw from, and never handed out twice."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from testbed import loopback


def test_free_ports_stay_out_of_the_ephemeral_range() -> None:
    """Outgoing connections draw their source ports from the ephemeral range; the servers' ports never do."""
    low, high = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = [loopback.free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(1024 <= port < low for port in ports), (low, high, ports)


def test_a_port_is_never_handed_out_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Even when it is still free: a server given it may not have bound it yet."""
    first = loopback.free_port()
    monkeypatch.setattr(random, "choice", lambda _ports: first)
    with pytest.raises(OSError, match=r"no free port on 127\.0\.0\.1 after 200 tries"):
        loopback.free_port()
