"""A stand-in for the Redis chart's ``redis-master`` Service: one loopback address that forwards to the master.

In the cluster, the Service selects the pod labelled ``isMaster=true``. When the sentinels finish a failover, they
run the chart's client-reconfig script; the ``kubectl-shared`` sidecar picks the new master up within a second,
relabels the pods, and the Service's endpoints follow. ``MasterService`` does the same on loopback: it listens on
one port, forwards each connection to the current master, and, ``relabel_delay`` seconds after the sentinels
announce ``+switch-master``, forwards new connections to the new master and drops the old ones. Until then a
connection to a dead master is refused, as a connection to a pod whose Redis is gone.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import redis

from testbed.loopback import HOST
from testbed.redisbed import RedisBed

_CHUNK = 65536


@dataclass
class MasterService:
    target_port: int
    #: Seconds from the sentinels' ``+switch-master`` to the Service reaching the new master.
    relabel_delay: float
    #: ``(when, port)`` of each move of the Service.
    moves: list[tuple[float, int]] = field(default_factory=list)
    _listener: socket.socket | None = None
    _open: set[socket.socket] = field(default_factory=set)
    _scheduled: set[int] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopped: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _timers: list[threading.Timer] = field(default_factory=list)

    @property
    def port(self) -> int:
        assert self._listener is not None, "start() first"
        return int(self._listener.getsockname()[1])

    def start(self) -> MasterService:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, 0))
        listener.listen(64)
        listener.settimeout(0.2)
        self._listener = listener
        self._spawn(self._accept_loop)
        return self

    def close(self) -> None:
        self._stopped.set()
        with self._lock:
            timers = list(self._timers)
        for timer in timers:
            timer.cancel()  # a relabel still pending must not move a closed Service
        if self._listener is not None:
            self._listener.close()
        self._drop_connections()
        for thread in self._threads:
            thread.join(timeout=5)

    def move_to(self, port: int) -> None:
        """Relabel: new connections go to ``port``; connections to the old master are dropped."""
        with self._lock:
            self.target_port = port
            self.moves.append((time.monotonic(), port))
        self._drop_connections()

    def follow_sentinel(self, bed: RedisBed) -> None:
        """Move ``relabel_delay`` seconds after the first sentinel of ``bed`` announces ``+switch-master``.

        Every sentinel runs the chart's client-reconfig script when it switches (the leader first, the others as
        they learn of it), and the first relabel moves the Service.
        """
        for sentinel in bed.sentinels:
            self._spawn(lambda port=sentinel.port: self._listen(bed, port))

    def _listen(self, bed: RedisBed, port: int) -> None:
        sentinel = bed.client(port, socket_timeout=1)
        pubsub = sentinel.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe("+switch-master")
            while not self._stopped.is_set():
                message = pubsub.get_message(timeout=0.2)
                if message is not None:
                    # "<master-set> <old-ip> <old-port> <new-ip> <new-port>"
                    self._announced(int(str(message["data"]).split()[-1]))
        except (redis.RedisError, OSError):
            if not self._stopped.is_set():
                raise
        finally:
            pubsub.close()
            sentinel.close()  # held until here: collecting the client would close the subscription

    def _announced(self, new_port: int) -> None:
        timer = threading.Timer(self.relabel_delay, self.move_to, args=(new_port,))
        timer.daemon = True
        with self._lock:
            if new_port in self._scheduled or self._stopped.is_set():
                return
            self._scheduled.add(new_port)
            self._timers.append(timer)
            timer.start()

    def _spawn(self, target: object) -> None:
        thread = threading.Thread(target=target, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _drop_connections(self) -> None:
        with self._lock:
            dropped, self._open = self._open, set()
        for sock in dropped:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                port = self.target_port
            try:
                upstream = self._connect(port)
            except OSError:
                client.close()  # the master's Redis is gone: refused, as by the pod
                continue
            with self._lock:
                # A move while connecting dropped the open connections, and this one goes to the old master too.
                current = self.target_port == port and not self._stopped.is_set()
                if current:
                    self._open.update((client, upstream))
            if not current:
                for sock in (client, upstream):
                    sock.close()
                continue
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _connect(self, port: int) -> socket.socket:
        return socket.create_connection((HOST, port), timeout=1)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            source.settimeout(None)
            while data := source.recv(_CHUNK):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            with self._lock:
                self._open.difference_update((source, sink))


@contextlib.contextmanager
def master_service(bed: RedisBed, relabel_delay: float) -> Iterator[MasterService]:
    """The bed's master behind one address that follows its sentinels; always closed."""
    service = MasterService(bed.master_port(), relabel_delay).start()
    try:
        service.follow_sentinel(bed)
        yield service
    finally:
        service.close()
