"""A stand-in for ZITADEL's Redis cache connector (the ZITADEL process cannot run here), for benchmark and tests.

What it keeps of ZITADEL's: the settings of the connector the program configures (``components.zitadel.cache_config``:
one address, ``ClientName``, ``DBOffset``, timeouts, ``MaxRetries``), go-redis's retry loop with its backoff
(go-redis v9 ``redis.go`` ``_process``, ``internal.RetryBackoff``; ``MinRetryBackoff`` 8ms and ``MaxRetryBackoff``
512ms, ZITADEL's defaults), and the circuit breaker consulted before every attempt (``testbed.breaker``).
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Final

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from components.wiring import zitadel_args
from components.zitadel import cache_config
from stacks import dblayout
from stacks.config import StackConfig, duration_seconds
from testbed.breaker import BreakerOpenError, CircuitBreaker, TooManyRequestsError
from testbed.redisbed import HOST

#: ZITADEL's ``MinRetryBackoff`` and ``MaxRetryBackoff`` (v4.13.0 ``cmd/defaults.yaml``; the stacks keep them).
MIN_RETRY_BACKOFF_SECONDS: Final = 0.008
MAX_RETRY_BACKOFF_SECONDS: Final = 0.512


def retry_backoff(attempt: int) -> float:
    """go-redis's ``RetryBackoff``: ``min + rand(min << attempt)``, capped at ``max``."""
    d = MIN_RETRY_BACKOFF_SECONDS * (1 << attempt)
    return min(MIN_RETRY_BACKOFF_SECONDS + random.uniform(0, d), MAX_RETRY_BACKOFF_SECONDS)


def connector_settings(cfg: StackConfig) -> dict[str, Any]:
    """``Caches.Connectors.Redis`` as the program hands it to ZITADEL."""
    return dict(cache_config(zitadel_args(cfg))["Connectors"]["Redis"])


@dataclass
class CacheClient:
    """One ZITADEL cache (``purpose``) on one address, its calls through ``breaker``."""

    cfg: StackConfig
    port: int
    password: str
    breaker: CircuitBreaker
    purpose: str = "Instance"
    #: ``(when it returned, ok)`` of each call ``run`` made.
    calls: list[tuple[float, bool]] = field(default_factory=list)
    #: When each attempt that the breaker let through went to the address.
    attempts: list[float] = field(default_factory=list)
    max_retries: int = field(init=False)
    _client: redis.Redis = field(init=False)

    def __post_init__(self) -> None:
        settings = connector_settings(self.cfg)
        self.max_retries = int(settings["MaxRetries"])
        self._client = redis.Redis(
            host=HOST,
            port=self.port,
            db=int(settings["DBOffset"]) + dblayout.ZITADEL_CACHE_PURPOSES[self.purpose],
            # ZITADEL's own ACL user (``Username``); ``password`` must be that user's.
            username=str(settings["Username"]),
            password=self.password,
            client_name=str(settings["ClientName"]),
            socket_connect_timeout=duration_seconds(str(settings["DialTimeout"])),
            socket_timeout=duration_seconds(str(settings["ReadTimeout"])),
            # The retry loop is the one below, so that each attempt passes the breaker as in go-redis.
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )

    @property
    def redis(self) -> redis.Redis:
        return self._client

    def call(self, key: str = "v4.13.0:instanceIndexByHost:localhost") -> bool:
        """One cache lookup; True when Redis answered (a miss is an answer)."""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(retry_backoff(attempt))
            try:
                done = self.breaker.allow()
            except (BreakerOpenError, TooManyRequestsError):
                return False  # go-redis does not retry what the limiter refused
            self.attempts.append(time.monotonic())
            try:
                self._client.get(key)
            except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError):
                done(False)  # go-redis retries these
                continue
            except redis.RedisError:
                done(False)
                return False
            done(True)
            return True
        return False

    def run(self, stop: threading.Event, period: float) -> None:
        """Call every ``period`` seconds until ``stop``, recording each outcome (a pod under steady load)."""
        while not stop.is_set():
            ok = self.call()
            self.calls.append((time.monotonic(), ok))
            stop.wait(period)

    def first_success_after(self, since: float) -> float | None:
        return next((when for when, ok in self.calls if ok and when > since), None)

    def attempts_between(self, start: float, end: float) -> int:
        return sum(start < when < end for when in self.attempts)

    def close(self) -> None:
        self._client.close()
