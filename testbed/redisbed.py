"""A test bed of real ``redis-server`` and ``redis-sentinel`` processes configured from a stack's typed config.

The settings come from ``components.redis_settings`` (the same source as the Helm values); this module only adds
what the pods get from the chart itself (ports, the password, the replica relationship) and renders the files.
Everything listens on 127.0.0.1, on free ports, in a temporary folder, and ``RedisBed.close`` always stops it.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from components import redis_acl, redis_settings
from components.redis_acl import RedisUser
from stacks import names
from stacks.config import EdgeRateLimit, EventStreams, RedisConfig

# Re-exported for the modules that take the loopback facts from the bed.
from testbed.loopback import HOST as HOST
from testbed.loopback import free_port as free_port

T = TypeVar("T")


class BedError(RuntimeError):
    """The bed did not reach the state a test needs (with the processes' logs attached)."""


def binaries_available() -> bool:
    return bool(shutil.which("redis-server") and shutil.which("redis-sentinel"))


def new_password() -> str:
    """A fresh password per bed, shaped like the stack's (URL-safe); never a constant in the test code."""
    return secrets.token_urlsafe(36)


#: The ACL users' files in each process's folder, as the Vault agent renders them into the pods.
ACL_FILE = "users.acl"
SENTINEL_USERS_FILE = "sentinel-users.conf"


def default_users() -> tuple[RedisUser, ...]:
    """The client users of a stack with the default stream names and counter prefix."""
    s = EventStreams()
    prefix = EdgeRateLimit.model_fields["key_prefix"].default
    return redis_acl.client_users((s.high, s.normal, s.low, s.dead_letter), prefix)


def redis_conf(cfg: RedisConfig, *, port: int, workdir: Path, password: str, replica_of: int | None) -> str:
    lines = [
        f"port {port}",
        f"bind {HOST}",
        "protected-mode yes",
        f'dir "{workdir}"',
        f'logfile "{workdir / "redis.log"}"',
        # The chart passes --requirepass; with an ACL file Redis takes ``default``'s password from the file instead.
        f"requirepass {password}",
        f"masterauth {password}",
        f'aclfile "{workdir / ACL_FILE}"',
        # Announce the address the other processes use (the chart announces pod hostnames).
        f"replica-announce-ip {HOST}",
    ]
    lines += [f"{key} {value}" for key, value in redis_settings.redis_directives(cfg)]
    lines += [f'rename-command {command} ""' for command in names.REDIS_DISABLED_COMMANDS]
    if replica_of is not None:
        lines.append(f"replicaof {HOST} {replica_of}")
    return "\n".join(lines) + "\n"


def sentinel_conf(cfg: RedisConfig, *, port: int, workdir: Path, password: str, master_port: int) -> str:
    s = redis_settings.sentinel_settings(cfg)
    return (
        "\n".join(
            [
                f"port {port}",
                f"bind {HOST}",
                f'dir "{workdir}"',
                f'logfile "{workdir / "sentinel.log"}"',
                f"sentinel announce-ip {HOST}",
                f"sentinel monitor {s.master_set} {HOST} {master_port} {s.quorum}",
                f"sentinel auth-pass {s.master_set} {password}",
                f"sentinel down-after-milliseconds {s.master_set} {s.down_after_milliseconds}",
                f"sentinel failover-timeout {s.master_set} {s.failover_timeout}",
                f"sentinel parallel-syncs {s.master_set} {s.parallel_syncs}",
                # auth.sentinel: the sentinels themselves require the password.
                f"requirepass {password}",
                # The clients' Sentinel users, as the chart's sentinel.configuration includes them.
                f'include "{workdir / SENTINEL_USERS_FILE}"',
            ]
        )
        + "\n"
    )


def wait_until(what: str, check: Callable[[], T | None], timeout: float, interval: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy; raise ``BedError`` naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (redis.RedisError, OSError) as exc:
            last_error = exc
        time.sleep(interval)
    raise BedError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error})")


@dataclass
class Process:
    name: str
    port: int
    workdir: Path
    conf: Path
    argv: list[str]
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

    def exited(self) -> bool:
        return self.popen is not None and self.popen.poll() is not None

    def alive(self) -> bool:
        """Running; raises ``BedError`` with the log's tail when the process has exited (e.g. its port was taken)."""
        if self.exited():
            raise BedError(f"{self.name} exited while starting\n{self.log_tail()}")
        return True

    def signal(self, sig: signal.Signals) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL, the way a node dies: no shutdown hooks, no final fsync."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
        self.popen.terminate()
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, lines: int = 15) -> str:
        log = self.workdir / ("sentinel.log" if "sentinel" in self.name else "redis.log")
        if not log.exists():
            return f"--- {self.name}: no log"
        return f"--- {self.name} ({log})\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class RedisBed:
    """1 master + N-1 replicas (+ sentinels), as the stack's Sentinel group runs them."""

    cfg: RedisConfig
    root: Path
    password: str = field(default_factory=new_password)
    #: The client users (``components.redis_acl``) and a fresh password for each.
    users: tuple[RedisUser, ...] = field(default_factory=default_users)
    user_passwords: dict[str, str] = field(default_factory=dict)
    nodes: list[Process] = field(default_factory=list)
    sentinels: list[Process] = field(default_factory=list)
    #: Which start this is: a retry keeps its files in a folder of its own (``workroot``).
    attempt: int = 1

    # --- lifecycle -------------------------------------------------------------------------------------------------

    def start(self, *, with_sentinels: bool = True, attempts: int = 3) -> RedisBed:
        """Start the group; a process that exits while starting (its port taken after all) costs one attempt."""
        for user in self.users:
            self.user_passwords.setdefault(user.name, new_password())
        for attempt in range(1, attempts + 1):
            self.attempt = attempt
            try:
                self._start_once(with_sentinels)
                return self
            except BedError:
                died = any(p.exited() for p in [*self.nodes, *self.sentinels])
                self.close()
                if not died or attempt == attempts:
                    raise
                self.nodes, self.sentinels = [], []
            except BaseException:
                self.close()
                raise
        raise BedError(f"no attempt made to start the bed (attempts={attempts})")

    def _start_once(self, with_sentinels: bool) -> None:
        master_port = free_port()
        for index in range(self.cfg.nodes):
            port = master_port if index == 0 else free_port()
            self.nodes.append(self._node(index, port, replica_of=None if index == 0 else master_port))
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            wait_until(f"{node.name} to answer", lambda n=node: n.alive() and self.client(n.port).ping(), 10)  # type: ignore[misc]
        self.wait_replicas_synced(self.nodes[0].port, self.cfg.nodes - 1)
        if with_sentinels:
            for index in range(self.cfg.nodes):
                self.sentinels.append(self._sentinel(index, master_port))
            for sentinel in self.sentinels:
                sentinel.start()
            self.wait_sentinels_ready()

    @property
    def workroot(self) -> Path:
        """Where this attempt's processes keep their files: ``root``, then a fresh folder per retry (no log or data
        file of a failed attempt is read again)."""
        return self.root if self.attempt == 1 else self.root / f"attempt-{self.attempt}"

    def close(self) -> None:
        for process in [*self.sentinels, *self.nodes]:
            process.stop()

    def __enter__(self) -> RedisBed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def diagnostics(self) -> str:
        return "\n".join(p.log_tail() for p in [*self.nodes, *self.sentinels])

    def _node(self, index: int, port: int, replica_of: int | None) -> Process:
        workdir = self.workroot / f"node-{index}"
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / "redis.conf"
        conf.write_text(redis_conf(self.cfg, port=port, workdir=workdir, password=self.password, replica_of=replica_of))
        conf.chmod(0o600)
        self._write_private(workdir / ACL_FILE, redis_acl.acl_lines(self.users, self._hash))
        return Process(f"redis-{index}", port, workdir, conf, ["redis-server", str(conf)])

    def _sentinel(self, index: int, master_port: int) -> Process:
        workdir = self.workroot / f"sentinel-{index}"
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / "sentinel.conf"
        port = free_port()
        conf.write_text(
            sentinel_conf(self.cfg, port=port, workdir=workdir, password=self.password, master_port=master_port)
        )
        conf.chmod(0o600)
        self._write_private(workdir / SENTINEL_USERS_FILE, redis_acl.sentinel_lines(self.users, self._hash))
        return Process(f"sentinel-{index}", port, workdir, conf, ["redis-sentinel", str(conf)])

    def _hash(self, user: str) -> str:
        password = self.password if user == names.REDIS_DEFAULT_USER else self.user_passwords[user]
        return redis_acl.password_sha256(password)

    @staticmethod
    def _write_private(path: Path, text: str) -> None:
        path.write_text(text)
        path.chmod(0o600)

    def restart(self, node: Process) -> None:
        """Start a stopped node again with its own config file and data dir (a container restart)."""
        node.start()
        wait_until(f"{node.name} to answer after restart", lambda: self.client(node.port).ping(), 10)

    # --- clients ---------------------------------------------------------------------------------------------------

    def client(self, port: int, db: int = 0, password: str | None = "", **options: Any) -> redis.Redis:
        """A single-address client; it does not retry, so each test sees every failure itself."""
        settings: dict[str, Any] = {
            "socket_timeout": 2,
            "socket_connect_timeout": 1,
            "decode_responses": True,
            "retry": Retry(NoBackoff(), 0),
            **options,
        }
        return redis.Redis(
            host=HOST, port=port, db=db, password=self.password if password == "" else password, **settings
        )

    def user_client(self, user: str, port: int | None = None, db: int = 0, **options: Any) -> redis.Redis:
        """A single-address client logged in as one of the client users (on the master unless ``port``)."""
        return self.client(
            self.nodes[0].port if port is None else port,
            db=db,
            username=user,
            password=self.user_passwords[user],
            **options,
        )

    def user_sentinel(self, user: str) -> Sentinel:
        """Every sentinel, and the master they name, as one of the client users (its own user on both)."""
        credentials = {"username": user, "password": self.user_passwords[user]}
        return Sentinel(
            [(HOST, s.port) for s in self.sentinels],
            socket_timeout=1,
            sentinel_kwargs={**credentials, "socket_timeout": 1},
            decode_responses=True,
            **credentials,
        )

    def sentinel_client(self, password: str | None = "") -> Sentinel:
        pw = self.password if password == "" else password
        return Sentinel(
            [(HOST, s.port) for s in self.sentinels],
            socket_timeout=1,
            sentinel_kwargs={"password": pw, "socket_timeout": 1},
            password=pw,
            decode_responses=True,
        )

    def master_port(self) -> int:
        """The master as the sentinels report it."""
        _host, port = self.sentinel_client().discover_master(redis_settings.sentinel_settings(self.cfg).master_set)
        return int(port)

    def node(self, port: int) -> Process:
        return next(n for n in self.nodes if n.port == port)

    # --- waits -----------------------------------------------------------------------------------------------------

    def wait_replicas_synced(self, master_port: int, count: int, timeout: float = 20) -> None:
        def synced() -> bool:
            info = self.client(master_port).info("replication")
            online = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
            return info.get("connected_slaves", 0) >= count and all(r.get("state") == "online" for r in online)

        wait_until(f"{count} replicas in sync with port {master_port}", synced, timeout)

    def wait_sentinels_ready(self, timeout: float = 20) -> None:
        s = redis_settings.sentinel_settings(self.cfg)

        def ready() -> bool:
            for sentinel in self.sentinels:
                sentinel.alive()
                c = self.client(sentinel.port)
                master = c.execute_command("SENTINEL", "MASTER", s.master_set)
                fields = dict(zip(master[::2], master[1::2], strict=False)) if isinstance(master, list) else master
                if int(fields["num-slaves"]) < self.cfg.nodes - 1:
                    return False
                if int(fields["num-other-sentinels"]) < len(self.sentinels) - 1:
                    return False
            return True

        wait_until("every sentinel to see every replica and every other sentinel", ready, timeout, interval=0.2)


class AckedWriter(threading.Thread):
    """Writes numbered keys through the master the sentinels name, keeping those a replica acknowledged (WAIT 1)."""

    def __init__(self, bed: RedisBed, db: int) -> None:
        super().__init__(daemon=True)
        self.bed, self.db = bed, db
        #: (key, when WAIT returned, port of the master that took it)
        self.acked: list[tuple[str, float, int]] = []
        self.errors = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        client: redis.Redis | None = None
        port = 0
        index = 0
        while not self._stop_event.is_set():
            try:
                if client is None:
                    port = self.bed.master_port()
                    client = self.bed.client(port, db=self.db, socket_timeout=0.5)
                key = f"acked:{index}"
                client.set(key, index)
                if int(client.execute_command("WAIT", 1, 1000)) >= 1:
                    self.acked.append((key, time.monotonic(), port))
                index += 1
            except (redis.RedisError, OSError):
                # The master is gone or demoted: ask the sentinels again, like a Sentinel-aware client does.
                self.errors += 1
                client = None
                time.sleep(0.05)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)

    @property
    def keys(self) -> list[str]:
        return [key for key, _, _ in self.acked]

    def first_ack_from_other_master(self, old_port: int) -> float | None:
        """When the first write acknowledged through another master than ``old_port`` returned."""
        return next((t for _, t, port in self.acked if port != old_port), None)


def missing_keys(client: redis.Redis, keys: list[str]) -> list[str]:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.exists(key)
    return [key for key, exists in zip(keys, pipe.execute(), strict=True) if not exists]


@contextlib.contextmanager
def running_bed(cfg: RedisConfig, root: Path, *, with_sentinels: bool = True) -> Iterator[RedisBed]:
    bed = RedisBed(cfg, root)
    try:
        yield bed.start(with_sentinels=with_sentinels)
    finally:
        bed.close()
