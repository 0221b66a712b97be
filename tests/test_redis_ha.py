"""Redis HA on real redis-server and redis-sentinel processes, configured from the stacks' typed config."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from stacks.config import RedisConfig, StackConfig
from testbed import redisbed
from testbed.loopback import HOST, free_port
from testbed.redisbed import (
    AckedWriter,
    BedError,
    RedisBed,
    binaries_available,
    missing_keys,
    running_bed,
    wait_until,
)
from testbed.required import require
from tests.conftest import stack_config

require(binaries_available(), "redis-server and redis-sentinel", "apt-get install redis-server redis-sentinel")

#: Failover = down-after + the sentinels' agreement, election and promotion (measured about 1 s on loopback); the
#: rest of the allowance absorbs a loaded CI machine.
ELECTION_ALLOWANCE_S = 4.0
#: README's DB layout: the event streams, and ZITADEL's Instance cache (DBOffset 2 + purpose 1).
EVENTS_DB = 1
INSTANCE_CACHE_DB = 3


def failover_bound(cfg: RedisConfig) -> float:
    return cfg.down_after_milliseconds / 1000 + ELECTION_ALLOWANCE_S


@pytest.fixture(scope="module")
def prod() -> StackConfig:
    return stack_config("prod")


@pytest.fixture(scope="module")
def shared_bed(prod: StackConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisBed]:
    """One Sentinel group for the tests that do not break it."""
    with running_bed(prod.redis, tmp_path_factory.mktemp("shared-bed")) as bed:
        yield bed


# --- authentication ------------------------------------------------------------------------------------------------


def test_sentinel_clients_find_the_master(shared_bed: RedisBed) -> None:
    master_set = "mymaster"
    sentinel = shared_bed.sentinel_client()
    host, port = sentinel.discover_master(master_set)
    assert (host, port) == ("127.0.0.1", shared_bed.nodes[0].port)
    master = sentinel.master_for(master_set, db=EVENTS_DB)
    master.set("probe", "ok")
    assert master.get("probe") == "ok"
    assert sorted(p for _, p in sentinel.discover_slaves(master_set)) == sorted(n.port for n in shared_bed.nodes[1:])


@pytest.mark.parametrize("password", [None, "wrong-password"])
def test_redis_refuses_missing_or_wrong_password(shared_bed: RedisBed, password: str | None) -> None:
    with pytest.raises(redis.AuthenticationError):
        shared_bed.client(shared_bed.nodes[0].port, password=password).set("k", "v")


@pytest.mark.parametrize("password", [None, "wrong-password"])
def test_sentinel_refuses_missing_or_wrong_password(shared_bed: RedisBed, password: str | None) -> None:
    with pytest.raises(redis.AuthenticationError):
        shared_bed.client(shared_bed.sentinels[0].port, password=password).execute_command(
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"
        )


#: What every prod node and sentinel must run (README's configuration table), read back from the live processes.
PROD_NODE_SETTINGS = {
    "databases": "16",
    "appendonly": "yes",
    "appendfsync": "everysec",
    "min-replicas-to-write": "1",
    "min-replicas-max-lag": "10",
}
PROD_SENTINEL_SETTINGS = {
    "quorum": 2,
    "down-after-milliseconds": 5000,
    "failover-timeout": 60000,
    "parallel-syncs": 1,
}


def test_nodes_run_the_stack_settings(shared_bed: RedisBed) -> None:
    for node in shared_bed.nodes:
        client = shared_bed.client(node.port)
        running = {key: client.config_get(key)[key] for key in PROD_NODE_SETTINGS}
        assert running == PROD_NODE_SETTINGS, node.name
        assert client.config_get("save")["save"] == ""  # no RDB snapshots: AOF is the persistence


def test_sentinels_run_the_stack_settings(shared_bed: RedisBed) -> None:
    for sentinel in shared_bed.sentinels:
        reply = shared_bed.client(sentinel.port).execute_command("SENTINEL", "MASTER", "mymaster")
        fields = dict(zip(reply[::2], reply[1::2], strict=True)) if isinstance(reply, list) else reply
        assert {key: int(fields[key]) for key in PROD_SENTINEL_SETTINGS} == PROD_SENTINEL_SETTINGS, sentinel.name


# --- DB isolation --------------------------------------------------------------------------------------------------


def test_cache_truncate_leaves_events_untouched(shared_bed: RedisBed) -> None:
    # README: the event streams in DB 1, ZITADEL's cache block (which it may FLUSHDB) DBs 3..9.
    stream = "zitadel:events:high"
    events = shared_bed.client(shared_bed.nodes[0].port, db=1)
    for n in range(20):
        events.xadd(stream, {"event": f"user.human.added:{n}"})
    for db in range(3, 10):
        cache = shared_bed.client(shared_bed.nodes[0].port, db=db)
        cache.set(f"cache:{db}", "cached")
        assert cache.flushdb() is True  # ZITADEL's Truncate
        assert cache.dbsize() == 0
    assert events.xlen(stream) == 20


def test_flushall_is_refused(shared_bed: RedisBed) -> None:
    events = shared_bed.client(shared_bed.nodes[0].port, db=EVENTS_DB)
    events.set("survivor", "1")
    with pytest.raises(redis.ResponseError, match="unknown command"):
        events.flushall()
    assert events.get("survivor") == "1"


# --- failover ------------------------------------------------------------------------------------------------------


def test_failover_keeps_every_acknowledged_write(prod: StackConfig, tmp_path: Path) -> None:
    cfg = prod.redis
    with running_bed(cfg, tmp_path) as bed:
        writer = AckedWriter(bed, EVENTS_DB)
        writer.start()
        wait_until("100 acknowledged writes", lambda: len(writer.acked) >= 100, 20)
        old = bed.node(bed.master_port())
        killed_at = time.monotonic()
        old.kill()
        new_port = wait_until(
            "a new master", lambda: (p := bed.master_port()) != old.port and p, failover_bound(cfg) + 10, 0.1
        )
        first_ack = wait_until(
            "an acknowledged write on the new master", lambda: writer.first_ack_from_other_master(old.port), 15
        )
        writer.stop()
        failover_seconds = first_ack - killed_at
        assert failover_seconds <= failover_bound(cfg), bed.diagnostics()
        assert failover_seconds >= cfg.down_after_milliseconds / 1000  # no failover before down-after
        acked = writer.keys
        assert missing_keys(bed.client(new_port, db=EVENTS_DB), acked) == []

        # The old master comes back (a restarted pod) and the sentinels turn it into a replica of the new one.
        bed.restart(old)
        wait_until(
            "the old master to rejoin as a replica",
            lambda: bed.client(old.port).info("replication").get("master_port") == new_port,
            20,
        )
        bed.wait_replicas_synced(new_port, cfg.nodes - 1)
        assert missing_keys(bed.client(old.port, db=EVENTS_DB), acked) == []


def test_single_address_client_works_once_repointed(prod: StackConfig, tmp_path: Path) -> None:
    """ZITADEL's client holds one address (the master Service). After a failover it works once that moves."""
    with running_bed(prod.redis, tmp_path) as bed:
        old_port = bed.master_port()
        zitadel = bed.client(old_port, db=INSTANCE_CACHE_DB, socket_timeout=0.5)
        zitadel.set("instance:1", "cached")
        bed.node(old_port).kill()
        with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
            zitadel.set("instance:2", "cached")
        new_port = wait_until("a new master", lambda: (p := bed.master_port()) != old_port and p, 20, 0.1)
        # The chart's kubectl sidecar relabels the new master pod; the Service's endpoints follow.
        repointed = bed.client(new_port, db=INSTANCE_CACHE_DB)
        repointed.set("instance:2", "cached")
        assert repointed.get("instance:1") == "cached"
        # A client left on the old address once it rejoins as a replica cannot write: the Service must move.
        bed.restart(bed.node(old_port))
        wait_until("old master demoted", lambda: bed.client(old_port).info("replication")["role"] == "slave", 20)
        with pytest.raises(redis.ReadOnlyError):
            bed.client(old_port, db=INSTANCE_CACHE_DB).set("instance:3", "cached")


# --- write safety --------------------------------------------------------------------------------------------------


def test_master_cut_off_from_its_replicas_refuses_writes(prod: StackConfig, tmp_path: Path) -> None:
    cfg = prod.redis
    assert cfg.min_replicas_to_write == 1
    with running_bed(cfg, tmp_path, with_sentinels=False) as bed:
        master = bed.client(bed.nodes[0].port, db=EVENTS_DB)
        master.set("before", "1")
        for replica in bed.nodes[1:]:
            replica.signal(signal.SIGSTOP)  # a partition: connections stay open, acknowledgements stop
        try:

            def refused() -> bool:
                try:
                    master.set("during", "1")
                except redis.ResponseError as exc:
                    return "NOREPLICAS" in str(exc)
                return False

            wait_until("the master to refuse writes", refused, cfg.min_replicas_max_lag + 5, 0.2)
        finally:
            for replica in bed.nodes[1:]:
                replica.signal(signal.SIGCONT)
        wait_until("writes accepted again", lambda: master.set("after", "1"), cfg.min_replicas_max_lag + 5, 0.2)


@pytest.mark.parametrize("persistence", [True, False], ids=["aof", "no-persistence"])
def test_fast_restart_of_the_master(prod: StackConfig, tmp_path: Path, persistence: bool) -> None:
    """The master crashes and restarts before down-after: no failover, so its own data decides what survives."""
    cfg = prod.redis
    if not persistence:
        cfg = cfg.model_copy(
            update={
                "persistence": cfg.persistence.model_copy(update={"enabled": False}),
                "allow_data_loss_on_restart": True,
            }
        )
    with running_bed(cfg, tmp_path) as bed:
        master_node = bed.nodes[0]
        master = bed.client(master_node.port, db=EVENTS_DB)
        keys = [f"event:{n}" for n in range(300)]
        for key in keys:
            master.set(key, "payload")
        assert int(master.execute_command("WAIT", cfg.nodes - 1, 2000)) == cfg.nodes - 1
        time.sleep(1.5)  # more than one appendfsync (everysec) interval
        master_node.kill()
        bed.restart(master_node)  # well inside down-after: the sentinels keep it as the master
        bed.wait_replicas_synced(master_node.port, cfg.nodes - 1)
        assert bed.master_port() == master_node.port
        surviving = {
            node.name: len(keys) - len(missing_keys(bed.client(node.port, db=EVENTS_DB), keys)) for node in bed.nodes
        }
        if persistence:
            assert surviving == {node.name: 300 for node in bed.nodes}
        else:
            # The master came back empty and the replicas resynced from it: every acknowledged write is gone.
            assert surviving == {node.name: 0 for node in bed.nodes}


def test_bed_reports_what_it_waited_for() -> None:
    with pytest.raises(BedError, match="waiting for nothing to happen"):
        wait_until("nothing to happen", lambda: None, 0.2)


def test_bed_survives_a_port_taken_before_the_bind(
    prod: StackConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A port another process takes between ``free_port`` and the bind costs one attempt, not the test."""
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind((HOST, 0))
    taken.listen()
    taken_port = taken.getsockname()[1]
    ports = iter([taken_port])
    monkeypatch.setattr(redisbed, "free_port", lambda: next(ports, None) or free_port())
    try:
        with running_bed(prod.redis, tmp_path) as bed:
            assert taken_port not in {p.port for p in [*bed.nodes, *bed.sentinels]}
            assert bed.client(bed.nodes[0].port).ping()
    finally:
        taken.close()


def test_bed_reports_a_process_that_exits_while_starting(
    prod: StackConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every attempt's port taken, the error names the process and carries its log: after exactly the attempts
    asked for, each in a folder of its own."""
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind((HOST, 0))
    taken.listen()
    handed: list[int] = []

    def always_taken() -> int:
        handed.append(taken.getsockname()[1])
        return handed[-1]

    monkeypatch.setattr(redisbed, "free_port", always_taken)
    try:
        with pytest.raises(BedError, match=r"redis-0 exited while starting[\s\S]*[Aa]ddress already in use"):
            RedisBed(prod.redis, tmp_path).start(attempts=2)
    finally:
        taken.close()
    assert len(handed) == 2 * prod.redis.nodes  # the master's port and each replica's, per attempt
    assert (tmp_path / "node-0" / "redis.log").exists() and (tmp_path / "attempt-2" / "node-0" / "redis.log").exists()
