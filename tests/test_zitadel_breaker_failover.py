"""A failover as ZITADEL lives it, on real redis-server and redis-sentinel: one address (a stand-in of the
``redis-master`` Service that follows the sentinels), every cache call through the model of ZITADEL's breaker with
the prod stack's settings.

README's failover section: Sentinel replaces the master about 6.3 s after the kill (down-after 5 s), the Service
follows 2 s later, the breaker opens on the first failures and probes 10 s after opening: the cache is back after
about 10 s, never before down-after, and within two open periods (20 s) even if the first probe came too early.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stacks.config import StackConfig
from testbed.breaker import BreakerSettings, CircuitBreaker, State
from testbed.forwarder import MasterService, master_service
from testbed.loopback import HOST
from testbed.redisbed import binaries_available, running_bed, wait_until
from testbed.required import require
from testbed.zitadel_cache import CacheClient
from tests.conftest import stack_config

require(binaries_available(), "redis-server and redis-sentinel", "apt-get install redis-server redis-sentinel")

DOWN_AFTER_S = 5.0
RELABEL_DELAY_S = 2.0
OPEN_S = 10.0
#: Two open periods and the time to trip, with room for a loaded machine.
BACK_WITHIN_S = 2 * OPEN_S + 2.0


@pytest.fixture(scope="module")
def prod() -> StackConfig:
    return stack_config("prod")


def test_cache_is_back_one_open_period_after_the_kill(prod: StackConfig, tmp_path: Path) -> None:
    with running_bed(prod.redis, tmp_path) as bed, master_service(bed, RELABEL_DELAY_S) as service:
        breaker = CircuitBreaker(BreakerSettings.of(prod))
        zitadel = CacheClient(prod, service.port, bed.user_passwords["zitadel"], breaker)
        stop = threading.Event()
        caller = threading.Thread(target=zitadel.run, args=(stop, 0.01))
        caller.start()
        try:
            wait_until("cache calls before the kill", lambda: sum(ok for _, ok in zitadel.calls) >= 100, 20)
            old_port = bed.master_port()
            killed_at = time.monotonic()
            bed.node(old_port).kill()
            back = wait_until("a cache call after the kill", lambda: zitadel.first_success_after(killed_at), 40, 0.1)
        finally:
            stop.set()
            caller.join(timeout=10)
            zitadel.close()
        assert DOWN_AFTER_S < back - killed_at <= BACK_WITHIN_S, bed.diagnostics()
        # The Service moved to the new master, after the sentinels and the relabel delay.
        (moved_at, port), *_ = service.moves
        assert port != old_port and moved_at - killed_at > DOWN_AFTER_S + RELABEL_DELAY_S
        # The breaker opened on the first failures and kept ZITADEL off the dead address: of the hundreds of cache
        # calls during the outage, only those that tripped it (4 attempts per call with MaxRetries 3; the sixth
        # failure in a row trips) and one probe per open period reached the address.
        opened_at, _, to = next(t for t in breaker.transitions if t[1] is State.CLOSED)
        assert to is State.OPEN and opened_at - killed_at < 2.0
        assert sum(killed_at < when < back for when, _ in zitadel.calls) > 300
        assert zitadel.attempts_between(killed_at, back) <= 6 + 2 + 1
        assert breaker.transitions[-1][2] is State.CLOSED


# --- the Service stand-in itself -----------------------------------------------------------------------------------


@contextlib.contextmanager
def listener() -> Iterator[socket.socket]:
    """A loopback port that accepts connections (a master's Redis, as far as the forwarder can tell)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((HOST, 0))
        sock.listen(8)
        yield sock
    finally:
        sock.close()


class MovedWhileConnecting(MasterService):
    """The relabel lands between reading the master's port and registering the connection to it."""

    new_port: int = 0

    def _connect(self, port: int) -> socket.socket:
        upstream = super()._connect(port)
        self.move_to(self.new_port)
        return upstream


def test_a_connection_opened_across_a_move_is_dropped() -> None:
    with listener() as old, listener() as new:
        service = MovedWhileConnecting(old.getsockname()[1], relabel_delay=0.0)
        service.new_port = new.getsockname()[1]
        service.start()
        try:
            with socket.create_connection((HOST, service.port), timeout=5) as client:
                # Dropped like every connection to the old master at the move, not forwarded to it.
                assert client.recv(1) == b""
            assert [port for _, port in service.moves] == [new.getsockname()[1]]
        finally:
            service.close()


def test_closing_cancels_a_pending_relabel() -> None:
    with listener() as old, listener() as new:
        service = MasterService(old.getsockname()[1], relabel_delay=0.3).start()
        service._announced(new.getsockname()[1])
        service.close()
        time.sleep(0.6)
        assert service.moves == [] and service.target_port == old.getsockname()[1]
