"""Redis HA on real redis-server and redis-sentinel processes, configured from the stacks' typed config."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from components import redis_settings
from components.redis import redis_values
from stacks import dblayout
from stacks.config import RedisConfig, StackConfig
from testbed.redisbed import (
    AckedWriter,
    BedError,
    RedisBed,
    binaries_available,
    missing_keys,
    redis_conf,
    running_bed,
    wait_until,
)
from tests.conftest import stack_config

if not binaries_available():
    if os.environ.get("CI"):
        raise RuntimeError(
            "CI must provide redis-server and redis-sentinel (apt-get install redis-server redis-sentinel)"
        )
    pytest.skip("redis-server/redis-sentinel not installed", allow_module_level=True)

#: Failover = down-after + the sentinels' agreement, election and promotion (measured about 1 s on loopback); the
#: rest of the allowance absorbs a loaded CI machine.
ELECTION_ALLOWANCE_S = 4.0


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


def test_sentinel_clients_find_the_master(shared_bed: RedisBed, prod: StackConfig) -> None:
    master_set = redis_settings.sentinel_settings(prod.redis).master_set
    sentinel = shared_bed.sentinel_client()
    host, port = sentinel.discover_master(master_set)
    assert (host, port) == ("127.0.0.1", shared_bed.nodes[0].port)
    master = sentinel.master_for(master_set, db=prod.events.db)
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


def test_nodes_run_the_stack_settings(shared_bed: RedisBed, prod: StackConfig) -> None:
    master = shared_bed.client(shared_bed.nodes[0].port)
    for key, value in redis_settings.redis_directives(prod.redis):
        if key == "save":
            continue  # CONFIG GET prints the empty schedule as ""
        assert master.config_get(key)[key] == value, key


def test_sentinels_run_the_stack_settings(shared_bed: RedisBed, prod: StackConfig) -> None:
    s = redis_settings.sentinel_settings(prod.redis)
    for sentinel in shared_bed.sentinels:
        reply = shared_bed.client(sentinel.port).execute_command("SENTINEL", "MASTER", s.master_set)
        fields = dict(zip(reply[::2], reply[1::2], strict=True)) if isinstance(reply, list) else reply
        assert int(fields["quorum"]) == s.quorum
        assert int(fields["down-after-milliseconds"]) == s.down_after_milliseconds
        assert int(fields["failover-timeout"]) == s.failover_timeout
        assert int(fields["parallel-syncs"]) == s.parallel_syncs


def test_helm_values_and_test_bed_share_one_source(prod: StackConfig) -> None:
    """The chart gets exactly the settings the processes here run with, so tests and deployment cannot drift."""
    values = redis_values(prod)
    s = redis_settings.sentinel_settings(prod.redis)
    assert (values["sentinel"]["masterSet"], values["sentinel"]["quorum"]) == (s.master_set, s.quorum)
    assert values["sentinel"]["downAfterMilliseconds"] == s.down_after_milliseconds
    assert values["sentinel"]["failoverTimeout"] == s.failover_timeout
    assert values["sentinel"]["parallelSyncs"] == s.parallel_syncs
    directives = [tuple(line.split(" ", 1)) for line in values["commonConfiguration"].splitlines()]
    assert directives == redis_settings.redis_directives(prod.redis)
    assert ("min-replicas-to-write", "1") in directives
    assert values["replica"]["disableCommands"] == list(redis_settings.disabled_commands())
    conf = redis_conf(prod.redis, port=6379, workdir=Path("/data"), password="x", replica_of=None)
    for key, value in directives:
        assert f"{key} {value}\n" in conf
    assert 'rename-command FLUSHALL ""' in conf


# --- DB isolation --------------------------------------------------------------------------------------------------


def test_cache_truncate_leaves_events_untouched(shared_bed: RedisBed, prod: StackConfig) -> None:
    layout = prod.db_layout
    stream = prod.events.streams.high
    events = shared_bed.client(shared_bed.nodes[0].port, db=layout.events_db)
    for n in range(20):
        events.xadd(stream, {"event": f"user.human.added:{n}"})
    for db in layout.cache_block:
        cache = shared_bed.client(shared_bed.nodes[0].port, db=db)
        cache.set(f"cache:{db}", "cached")
        assert cache.flushdb() is True  # ZITADEL's Truncate
        assert cache.dbsize() == 0
    assert events.xlen(stream) == 20


def test_flushall_is_refused(shared_bed: RedisBed, prod: StackConfig) -> None:
    events = shared_bed.client(shared_bed.nodes[0].port, db=prod.events.db)
    events.set("survivor", "1")
    with pytest.raises(redis.ResponseError, match="unknown command"):
        events.flushall()
    assert events.get("survivor") == "1"


def test_layout_keeps_zitadels_block_clear_of_events(prod: StackConfig) -> None:
    layout = prod.db_layout
    assert layout.events_db not in layout.cache_block
    assert max(layout.cache_block) < prod.redis.databases
    assert set(layout.cache_dbs.values()) <= set(layout.cache_block)
    assert dblayout.REDIS_CACHES == ("Instance", "Milestones", "Organization")


# --- failover ------------------------------------------------------------------------------------------------------


def test_failover_keeps_every_acknowledged_write(prod: StackConfig, tmp_path: Path) -> None:
    cfg = prod.redis
    with running_bed(cfg, tmp_path) as bed:
        writer = AckedWriter(bed, prod.events.db)
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
        assert missing_keys(bed.client(new_port, db=prod.events.db), acked) == []

        # The old master comes back (a restarted pod) and the sentinels turn it into a replica of the new one.
        bed.restart(old)
        wait_until(
            "the old master to rejoin as a replica",
            lambda: bed.client(old.port).info("replication").get("master_port") == new_port,
            20,
        )
        bed.wait_replicas_synced(new_port, cfg.nodes - 1)
        assert missing_keys(bed.client(old.port, db=prod.events.db), acked) == []


def test_single_address_client_works_once_repointed(prod: StackConfig, tmp_path: Path) -> None:
    """ZITADEL's client holds one address (the master Service). After a failover it works once that moves."""
    with running_bed(prod.redis, tmp_path) as bed:
        old_port = bed.master_port()
        zitadel = bed.client(old_port, db=prod.zitadel.cache.db_offset + 1, socket_timeout=0.5)
        zitadel.set("instance:1", "cached")
        bed.node(old_port).kill()
        with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
            zitadel.set("instance:2", "cached")
        new_port = wait_until("a new master", lambda: (p := bed.master_port()) != old_port and p, 20, 0.1)
        # The chart's kubectl sidecar relabels the new master pod; the Service's endpoints follow.
        repointed = bed.client(new_port, db=prod.zitadel.cache.db_offset + 1)
        repointed.set("instance:2", "cached")
        assert repointed.get("instance:1") == "cached"
        # A client left on the old address once it rejoins as a replica cannot write: the Service must move.
        bed.restart(bed.node(old_port))
        wait_until("old master demoted", lambda: bed.client(old_port).info("replication")["role"] == "slave", 20)
        with pytest.raises(redis.ReadOnlyError):
            bed.client(old_port, db=prod.zitadel.cache.db_offset + 1).set("instance:3", "cached")


# --- write safety --------------------------------------------------------------------------------------------------


def test_master_cut_off_from_its_replicas_refuses_writes(prod: StackConfig, tmp_path: Path) -> None:
    cfg = prod.redis
    assert cfg.min_replicas_to_write == 1
    with running_bed(cfg, tmp_path, with_sentinels=False) as bed:
        master = bed.client(bed.nodes[0].port, db=prod.events.db)
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
        master = bed.client(master_node.port, db=prod.events.db)
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
            node.name: len(keys) - len(missing_keys(bed.client(node.port, db=prod.events.db), keys))
            for node in bed.nodes
        }
        if persistence:
            assert surviving == {node.name: 300 for node in bed.nodes}
        else:
            # The master came back empty and the replicas resynced from it: every acknowledged write is gone.
            assert surviving == {node.name: 0 for node in bed.nodes}


def test_bed_reports_what_it_waited_for() -> None:
    with pytest.raises(BedError, match="waiting for nothing to happen"):
        wait_until("nothing to happen", lambda: None, 0.2)
