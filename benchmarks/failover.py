"""Failover benchmark on real redis-server/redis-sentinel processes: ``python -m benchmarks.failover``.

Side by side in one run, for the chart's Sentinel defaults (down-after 60000 ms, failover-timeout 180000 ms), the
dev stack and the prod stack: kill the master (SIGKILL) under a writer that waits for a replica (``WAIT 1``) and
measure kill → first acknowledged write on the new master, and how many acknowledged writes are missing after.

In the prod runs, the same failover as ZITADEL lives it: two stand-ins of its cache connector hold one address, a
stand-in of the ``redis-master`` Service that follows the sentinels after a relabel delay, and pass every attempt
through a model of ZITADEL's circuit breaker, one with the stack's settings and one with ZITADEL's defaults (60 s
open). Each reports kill → its first successful cache call.

Then the throughput of pipelined writes to the events DB with and without ``WAIT 1``, as a ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from stacks.config import MASTER_RELABEL_SECONDS, RedisConfig, StackConfig
from stacks.loader import load
from stacks.stackfile import path_of, read_stack_config
from stacktools.mocked import PROJECT_DIR
from testbed.breaker import ZITADEL_DEFAULTS, BreakerSettings, CircuitBreaker
from testbed.forwarder import master_service
from testbed.redisbed import (
    AckedWriter,
    BedError,
    RedisBed,
    binaries_available,
    missing_keys,
    running_bed,
    wait_until,
)
from testbed.zitadel_cache import CacheClient

#: The Bitnami chart's own Sentinel timings (values.yaml sentinel.downAfterMilliseconds / failoverTimeout).
CHART_DEFAULT_DOWN_AFTER_MS = 60000
CHART_DEFAULT_FAILOVER_TIMEOUT_MS = 180000


#: XADDs per pipeline in the throughput measure (the README's figures are for 50).
PIPELINE_SIZE = 50

#: A ZITADEL pod under steady load: one cache call every 10 ms.
CACHE_CALL_PERIOD_SECONDS = 0.01


@dataclass(frozen=True)
class ZitadelView:
    """Kill → first successful cache call through the master Service, per breaker."""

    stack_breaker: float
    default_breaker: float
    #: Kill → the Service stand-in reaching the new master.
    relabel: float


@dataclass(frozen=True)
class Failover:
    seconds: float
    lost: int
    acknowledged: int
    zitadel: ZitadelView | None = None


def stack(name: str) -> StackConfig:
    return load(name, *read_stack_config(path_of(PROJECT_DIR, name)))


def chart_defaults(base: RedisConfig) -> RedisConfig:
    return base.model_copy(
        update={
            "down_after_milliseconds": CHART_DEFAULT_DOWN_AFTER_MS,
            "failover_timeout": CHART_DEFAULT_FAILOVER_TIMEOUT_MS,
        }
    )


def measure_failover(
    cfg: RedisConfig, events_db: int, workdir: Path, zitadel: StackConfig | None = None, relabel_delay: float = 0.0
) -> Failover:
    """One failover; with ``zitadel``, also as two stand-ins of its cache connector see it (stack and defaults)."""
    with running_bed(cfg, workdir) as bed, master_service(bed, relabel_delay) as service:
        clients: dict[str, CacheClient] = {}
        if zitadel is not None:
            for name, settings in (("stack", BreakerSettings.of(zitadel)), ("defaults", ZITADEL_DEFAULTS)):
                password = bed.user_passwords["zitadel"]
                clients[name] = CacheClient(zitadel, service.port, password, CircuitBreaker(settings))
        stop = threading.Event()
        threads = [threading.Thread(target=c.run, args=(stop, CACHE_CALL_PERIOD_SECONDS)) for c in clients.values()]
        writer = AckedWriter(bed, events_db)
        try:
            writer.start()
            for thread in threads:
                thread.start()
            wait_until("acknowledged writes", lambda: len(writer.acked) >= 200, 30)
            wait_until("cache calls", lambda: all(len(c.calls) >= 100 for c in clients.values()), 30)
            old_port = bed.master_port()
            killed_at = time.monotonic()
            bed.node(old_port).kill()
            limit = cfg.down_after_milliseconds / 1000 + 60
            first_ack = wait_until(
                "an acknowledged write on the new master", lambda: writer.first_ack_from_other_master(old_port), limit
            )
            # Keep writing a moment on the new master, then count what the new master is missing.
            time.sleep(0.5)
            writer.stop()
            keys = writer.keys
            lost = missing_keys(bed.client(bed.master_port(), db=events_db), keys)
            view = None
            if clients:
                # ZITADEL's default breaker stays open 60 s after it trips.
                backs = {
                    name: wait_until(
                        f"a cache call through the {name} breaker",
                        lambda c=c: c.first_success_after(killed_at),  # type: ignore[misc]
                        limit + ZITADEL_DEFAULTS.timeout,
                        0.1,
                    )
                    for name, c in clients.items()
                }
                view = ZitadelView(
                    stack_breaker=backs["stack"] - killed_at,
                    default_breaker=backs["defaults"] - killed_at,
                    relabel=service.moves[0][0] - killed_at,
                )
            return Failover(seconds=first_ack - killed_at, lost=len(lost), acknowledged=len(keys), zitadel=view)
        except BedError as error:
            raise BedError(f"{error}\n{bed.diagnostics()}") from None
        finally:
            stop.set()
            writer.stop()
            for thread in threads:
                thread.join(timeout=10)
            for client in clients.values():
                client.close()


def measure_throughput(bed: RedisBed, events_db: int, stream: str, pipeline: int, events: int, wait: bool) -> float:
    """Events per second written to the events stream in pipelines of ``pipeline`` XADDs (+ ``WAIT 1``)."""
    client = bed.client(bed.master_port(), db=events_db)
    client.delete(stream)
    started = time.perf_counter()
    for start in range(0, events, pipeline):
        pipe = client.pipeline(transaction=False)
        for n in range(start, min(start + pipeline, events)):
            pipe.xadd(stream, {"type": "user.human.added", "seq": n})
        if wait:
            pipe.execute_command("WAIT", 1, 1000)
        results = pipe.execute()
        if wait and int(results[-1]) < 1:
            raise RuntimeError("a replica did not acknowledge a batch")
    return events / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.failover", description=__doc__)
    parser.add_argument("--repetitions", type=int, default=3, help="failovers per configuration (default 3)")
    parser.add_argument("--events", type=int, default=20000, help="events per throughput run (default 20000)")
    parser.add_argument(
        "--relabel-delay",
        type=float,
        default=MASTER_RELABEL_SECONDS,
        help=f"seconds from +switch-master to the master Service moving (default {MASTER_RELABEL_SECONDS:g})",
    )
    args = parser.parse_args(argv)
    if not binaries_available():
        parser.error("needs redis-server and redis-sentinel (apt-get install redis-server redis-sentinel)")

    dev, prod = stack("dev"), stack("prod")
    configs = {
        "chart defaults": chart_defaults(prod.redis),
        "dev": dev.redis,
        "prod": prod.redis,
    }
    results: dict[str, list[Failover]] = {name: [] for name in configs}
    with tempfile.TemporaryDirectory(prefix="failover-bench-") as tmp:
        for rep in range(args.repetitions):
            for name, cfg in configs.items():
                workdir = Path(tmp) / f"{name.replace(' ', '-')}-{rep}"
                zitadel = prod if name == "prod" else None
                run = measure_failover(cfg, prod.events.db, workdir, zitadel, args.relabel_delay)
                results[name].append(run)
                view = run.zitadel
                seen = (
                    f"; ZITADEL's cache back after {view.stack_breaker:.2f} s (stack breaker), "
                    f"{view.default_breaker:.2f} s (defaults); Service moved at {view.relabel:.2f} s"
                    if view
                    else ""
                )
                print(
                    f"  {name:15} run {rep + 1}: failover {run.seconds:6.2f} s, "
                    f"lost {run.lost} of {run.acknowledged} acknowledged writes{seen}",
                    flush=True,
                )
        with running_bed(prod.redis, Path(tmp) / "throughput") as bed:
            stream = prod.events.streams.normal
            plain = measure_throughput(bed, prod.events.db, stream, PIPELINE_SIZE, args.events, wait=False)
            acked = measure_throughput(bed, prod.events.db, stream, PIPELINE_SIZE, args.events, wait=True)
            # The worst case: a WAIT after every single event.
            single = measure_throughput(bed, prod.events.db, stream, 1, args.events // 4, wait=False)
            single_acked = measure_throughput(bed, prod.events.db, stream, 1, args.events // 4, wait=True)

    baseline = statistics.median(r.seconds for r in results["chart defaults"])
    print()
    print(f"{'configuration':15} {'down-after':>10} {'median':>8} {'max':>8} {'lost':>5} {'vs chart':>9}")
    for name, runs in results.items():
        median, worst = statistics.median(r.seconds for r in runs), max(r.seconds for r in runs)
        print(
            f"{name:15} {configs[name].down_after_milliseconds:>8}ms {median:>7.2f}s {worst:>7.2f}s "
            f"{sum(r.lost for r in runs):>5} {baseline / median:>8.1f}x"
        )
    print()
    print(
        f"events DB throughput, pipelines of {PIPELINE_SIZE}: {plain:,.0f} events/s without WAIT, "
        f"{acked:,.0f} events/s with WAIT 1 per pipeline ({acked / plain:.2f}x)"
    )
    print(
        f"events DB throughput, one event per round trip: {single:,.0f} events/s without WAIT, "
        f"{single_acked:,.0f} events/s with WAIT 1 after each ({single_acked / single:.2f}x)"
    )
    runs = results["prod"]
    views = [r.zitadel for r in runs if r.zitadel is not None]
    relabel = statistics.median(v.relabel for v in views)
    stack_back = statistics.median(v.stack_breaker for v in views)
    default_back = statistics.median(v.default_breaker for v in views)
    print(
        f"zitadel view, prod (Service stand-in moves {args.relabel_delay:g} s after +switch-master, median "
        f"{relabel:.2f} s after the kill): stack breaker ({prod.breaker_timeout} open) median {stack_back:.2f} s, "
        f"max {max(v.stack_breaker for v in views):.2f} s; ZITADEL's defaults (60s open) median {default_back:.2f} s, "
        f"max {max(v.default_breaker for v in views):.2f} s"
    )
    median = statistics.median(r.seconds for r in runs)
    print(
        f"failover prod: median {median:.1f} s, max {max(r.seconds for r in runs):.1f} s, "
        f"lost {sum(r.lost for r in runs)} acknowledged writes, {baseline / median:.1f}x faster than chart defaults"
    )
    print(
        f"zitadel view: cache back after {stack_back:.1f} s with the stack's breaker, {default_back:.1f} s with "
        f"ZITADEL's defaults ({default_back / stack_back:.1f}x sooner)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
