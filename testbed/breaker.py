"""A model of ZITADEL's circuit breaker around its Redis cache calls, for the benchmark and the tests.

Not ZITADEL's code: a port of the semantics it runs, from the sources:

- ZITADEL (``internal/cache/connector/redis``, zitadel/zitadel at 3928efc86e; its ``CircuitBreaker`` keys and
  defaults are those of v4.13.0's ``cmd/defaults.yaml``): ``connector.go`` L151 sets go-redis's ``Limiter`` to
  ``newLimiter(c.CircuitBreaker, ...)``; ``circuit_breaker.go`` L46-68 builds a gobreaker ``TwoStepCircuitBreaker``
  with ``MaxRequests: MaxRetryRequests``, ``Interval``, ``Timeout`` and ``ReadyToTrip: readyToTrip`` (L29-38: trip
  when ``ConsecutiveFailures > MaxConsecutiveFailures``, else when ``TotalFailures / Requests > MaxFailureRatio``);
  ``ReportResult`` (L82-86) counts ``nil``, ``redis.Nil`` and ``context.Canceled`` as successes, any other error
  (connection, timeout, ``READONLY``) as a failure.
- go-redis v9 ``redis.go`` ``getConn``: ``Limiter.Allow()`` before taking a connection for each attempt, and the
  attempt's result reported back; an attempt the limiter refuses is not retried (``shouldRetry`` is false for it).
- sony/gobreaker v2.1.0 ``v2/gobreaker.go`` (the ``done(success bool)`` callback ZITADEL calls exists up to v2.3.0):
  ``NewCircuitBreaker`` L141-180 (``MaxRequests`` 0 means 1, ``Interval`` <= 0 means never reset while closed,
  ``Timeout`` <= 0 means 60 s); ``beforeRequest`` L277-291 (open: ``ErrOpenState``; half-open with ``Requests >=
  MaxRequests``: ``ErrTooManyRequests``; else count the request); ``afterRequest`` L294-309 (a result from an
  older generation is dropped); ``onSuccess``/``onFailure`` L311-333 (half-open: ``MaxRequests`` consecutive
  successes close it, one failure opens it); ``currentState`` L335-347 (closed: a new generation each
  ``Interval``; open: half-open once ``Timeout`` has passed); ``toNewGeneration`` L364-381 (every state change
  and every interval clears the counts).

Python's circuit-breaker libraries do not fit: pybreaker and circuitbreaker trip on consecutive failures only, with
no failure ratio and no counting interval, which are the two settings at stake here.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from stacks.config import StackConfig, duration_seconds

#: gobreaker's open period when ``Timeout`` <= 0 (v2/gobreaker.go L160, L190).
GOBREAKER_DEFAULT_TIMEOUT_SECONDS: Final = 60.0


class State(enum.Enum):
    CLOSED = "closed"
    HALF_OPEN = "half-open"
    OPEN = "open"


class BreakerOpenError(Exception):
    """gobreaker's ``ErrOpenState``: the call fails at once, Redis is not asked."""


class TooManyRequestsError(Exception):
    """gobreaker's ``ErrTooManyRequests``: half-open, and the probe calls are already out."""


@dataclass(frozen=True)
class BreakerSettings:
    """``Caches.Connectors.Redis.CircuitBreaker``, in seconds."""

    interval: float
    max_consecutive_failures: int
    max_failure_ratio: float
    timeout: float
    max_retry_requests: int

    @classmethod
    def of(cls, cfg: StackConfig) -> BreakerSettings:
        """The settings a stack gives ZITADEL (the same source as its configuration)."""
        breaker = cfg.zitadel.cache.circuit_breaker
        return cls(
            interval=duration_seconds(breaker.interval),
            max_consecutive_failures=breaker.max_consecutive_failures,
            max_failure_ratio=breaker.max_failure_ratio,
            timeout=duration_seconds(cfg.breaker_timeout),
            max_retry_requests=breaker.max_retry_requests,
        )


#: ZITADEL's own defaults (v4.13.0 ``cmd/defaults.yaml``, ``Caches.Connectors.Redis.CircuitBreaker``).
ZITADEL_DEFAULTS: Final = BreakerSettings(
    interval=0.0, max_consecutive_failures=5, max_failure_ratio=0.1, timeout=60.0, max_retry_requests=1
)


@dataclass
class Counts:
    requests: int = 0
    total_successes: int = 0
    total_failures: int = 0
    consecutive_successes: int = 0
    consecutive_failures: int = 0


@dataclass
class CircuitBreaker:
    """gobreaker's two-step breaker with ZITADEL's ``readyToTrip``. Thread-safe; ``clock`` returns seconds."""

    settings: BreakerSettings
    clock: Callable[[], float] = time.monotonic
    state: State = State.CLOSED
    counts: Counts = field(default_factory=Counts)
    #: ``(when, from, to)`` for every state change (ZITADEL logs each as a warning).
    transitions: list[tuple[float, State, State]] = field(default_factory=list)
    _generation: int = 0
    _expiry: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._new_generation(self.clock())

    @property
    def _max_requests(self) -> int:
        return self.settings.max_retry_requests or 1

    @property
    def _timeout(self) -> float:
        return self.settings.timeout if self.settings.timeout > 0 else GOBREAKER_DEFAULT_TIMEOUT_SECONDS

    def current_state(self) -> State:
        with self._lock:
            return self._current_state(self.clock())

    def allow(self) -> Callable[[bool], None]:
        """Admit one attempt or raise; the attempt then reports ``done(success)``."""
        with self._lock:
            state = self._current_state(self.clock())
            if state is State.OPEN:
                raise BreakerOpenError("circuit breaker is open")
            if state is State.HALF_OPEN and self.counts.requests >= self._max_requests:
                raise TooManyRequestsError("too many requests")
            self.counts.requests += 1
            generation = self._generation

        def done(success: bool) -> None:
            with self._lock:
                now = self.clock()
                state = self._current_state(now)
                if self._generation != generation:
                    return
                if success:
                    self._on_success(state, now)
                else:
                    self._on_failure(state, now)

        return done

    def _ready_to_trip(self) -> bool:
        s, c = self.settings, self.counts
        if s.max_consecutive_failures > 0 and c.consecutive_failures > s.max_consecutive_failures:
            return True
        if s.max_failure_ratio > 0 and c.requests > 0:
            return c.total_failures / c.requests > s.max_failure_ratio
        return False

    def _on_success(self, state: State, now: float) -> None:
        if state is State.OPEN:
            return
        self.counts.total_successes += 1
        self.counts.consecutive_successes += 1
        self.counts.consecutive_failures = 0
        if state is State.HALF_OPEN and self.counts.consecutive_successes >= self._max_requests:
            self._set_state(State.CLOSED, now)

    def _on_failure(self, state: State, now: float) -> None:
        if state is State.CLOSED:
            self.counts.total_failures += 1
            self.counts.consecutive_failures += 1
            self.counts.consecutive_successes = 0
            if self._ready_to_trip():
                self._set_state(State.OPEN, now)
        elif state is State.HALF_OPEN:
            self._set_state(State.OPEN, now)

    def _current_state(self, now: float) -> State:
        # gobreaker compares with expiry.Before(now): the boundary instant itself still belongs to the old period.
        if self.state is State.CLOSED and self._expiry is not None and self._expiry < now:
            self._new_generation(now)
        elif self.state is State.OPEN and self._expiry is not None and self._expiry < now:
            self._set_state(State.HALF_OPEN, now)
        return self.state

    def _set_state(self, state: State, now: float) -> None:
        if state is self.state:
            return
        self.transitions.append((now, self.state, state))
        self.state = state
        self._new_generation(now)

    def _new_generation(self, now: float) -> None:
        self._generation += 1
        self.counts = Counts()
        if self.state is State.CLOSED:
            self._expiry = now + self.settings.interval if self.settings.interval > 0 else None
        elif self.state is State.OPEN:
            self._expiry = now + self._timeout
        else:
            self._expiry = None
