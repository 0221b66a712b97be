"""ZITADEL's circuit breaker around Redis: the model's semantics (gobreaker's, ZITADEL's trip rule), the stack's
settings and their rules.

Expected values are written from gobreaker's documented behaviour and README's failover section (open 10 s: down-after
5 s + election 1 s + relabel 2 s + 2 s; a 60 s counting window; more than 5 failures in a row trip it, the failure
ratio stays off), not computed by the code under test.
"""

from __future__ import annotations

from typing import Any

import pytest

from stacks.defaults import deep_merge
from stacks.loader import StackConfigError, load
from stacks.stackfile import read_stack_config
from testbed.breaker import (
    ZITADEL_DEFAULTS,
    BreakerOpenError,
    BreakerSettings,
    CircuitBreaker,
    State,
    TooManyRequestsError,
)
from tests.conftest import PROJECT_DIR, stack_config

STACK = BreakerSettings(
    interval=60.0, max_consecutive_failures=5, max_failure_ratio=0.0, timeout=10.0, max_retry_requests=1
)
#: The stacks' settings before the ratio was turned off: ZITADEL's ratio in a 60 s window.
RATIO_IN_WINDOW = BreakerSettings(
    interval=60.0, max_consecutive_failures=5, max_failure_ratio=0.1, timeout=10.0, max_retry_requests=1
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def breaker(settings: BreakerSettings) -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    return CircuitBreaker(settings, clock=clock), clock


#: Healthy traffic, then more than ``maxConsecutiveFailures`` in a row: the trip a dead master causes.
TRIP = "s" * 100 + "f" * 6


def calls(cb: CircuitBreaker, outcomes: str) -> None:
    """``s`` a success, ``f`` a failure, each allowed then reported."""
    for outcome in outcomes:
        cb.allow()(outcome == "s")


# --- the model: gobreaker's semantics with ZITADEL's trip rule ------------------------------------------------------


def test_more_than_max_consecutive_failures_trip_it() -> None:
    cb, _ = breaker(ZITADEL_DEFAULTS)
    calls(cb, "s" * 1000 + "f" * 5)
    assert cb.current_state() is State.CLOSED  # 5 in a row is "permitted"; the ratio 5/1005 is far below 0.1
    calls(cb, "f")
    assert cb.current_state() is State.OPEN


def test_without_interval_the_ratio_counts_from_the_start() -> None:
    # A fresh pod: one failure among its first 9 calls is a ratio above 0.1.
    cb, _ = breaker(ZITADEL_DEFAULTS)
    calls(cb, "s" * 8 + "f")
    assert cb.current_state() is State.OPEN
    cb, _ = breaker(ZITADEL_DEFAULTS)
    calls(cb, "s" * 9 + "f")  # 1 of 10 is not above 0.1
    assert cb.current_state() is State.CLOSED
    # Later the ratio hardly moves: after 10000 calls, 5 failures in every 6 calls still do not trip it.
    cb, clock = breaker(ZITADEL_DEFAULTS)
    calls(cb, "s" * 10000)
    clock.now = 3600.0
    calls(cb, "fffffs" * 100)
    assert cb.current_state() is State.CLOSED


def test_a_counting_interval_starts_the_ratio_afresh() -> None:
    cb, clock = breaker(RATIO_IN_WINDOW)
    calls(cb, "s" * 1000)
    clock.now = 30.0
    calls(cb, "f")  # 1 of 1001 in this window
    assert cb.current_state() is State.CLOSED
    clock.now = 60.5
    calls(cb, "s" * 9 + "f")  # a new window: 1 of 10
    assert cb.current_state() is State.CLOSED
    clock.now = 121.0
    calls(cb, "f")  # the window's first call fails: 1 of 1 (no minimum call count)
    assert cb.current_state() is State.OPEN


@pytest.mark.parametrize("before", ["", "s", "s" * 8])
def test_one_early_failure_in_a_window_leaves_the_stacks_breaker_closed(before: str) -> None:
    # A window's first attempts, one of them failed (a reset connection, a slow reply): with a ratio this alone
    # would keep ZITADEL off Redis for 10 s; the stack's breaker trips on failures in a row only.
    cb, clock = breaker(STACK)
    calls(cb, "s" * 1000)
    clock.now = 60.5
    calls(cb, before + "f" + "s" * 3)
    assert cb.current_state() is State.CLOSED
    assert cb.transitions == []
    ratio, clock = breaker(RATIO_IN_WINDOW)
    calls(ratio, "s" * 1000)
    clock.now = 60.5
    calls(ratio, before + "f")
    assert ratio.current_state() is State.OPEN


def test_a_failing_cache_call_in_a_window_leaves_it_closed() -> None:
    # One cache call is up to 4 attempts (MaxRetries 3): a call that fails every attempt is 4 failures in a row,
    # even as the window's first, and the next call's success clears them.
    cb, clock = breaker(STACK)
    clock.now = 60.5
    calls(cb, "ffff" + "s")
    clock.now = 61.0
    calls(cb, "ffff" + "s")
    assert cb.current_state() is State.CLOSED


def test_a_dead_master_still_trips_the_stacks_breaker() -> None:
    # A failover: every attempt fails from the kill on; the sixth in a row (the second cache call) opens it.
    cb, clock = breaker(STACK)
    calls(cb, "s" * 1000)
    clock.now = 30.0
    calls(cb, "ffff" + "f")
    assert cb.current_state() is State.CLOSED
    calls(cb, "f")
    assert cb.current_state() is State.OPEN
    assert cb.transitions == [(30.0, State.CLOSED, State.OPEN)]


def test_open_fails_fast_for_the_timeout_then_lets_one_probe_through() -> None:
    cb, clock = breaker(STACK)
    calls(cb, TRIP)
    assert cb.transitions == [(0.0, State.CLOSED, State.OPEN)]
    clock.now = 10.0  # gobreaker: open until strictly after expiry
    with pytest.raises(BreakerOpenError):
        cb.allow()
    clock.now = 10.001
    probe = cb.allow()
    assert cb.current_state() is State.HALF_OPEN
    with pytest.raises(TooManyRequestsError):
        cb.allow()
    probe(True)
    assert cb.current_state() is State.CLOSED
    calls(cb, "s")


def test_a_failed_probe_opens_it_for_another_timeout() -> None:
    cb, clock = breaker(STACK)
    calls(cb, TRIP)
    clock.now = 10.5
    calls(cb, "f")
    assert cb.current_state() is State.OPEN
    clock.now = 20.4
    with pytest.raises(BreakerOpenError):
        cb.allow()
    clock.now = 20.6
    calls(cb, "s")
    assert [(when, to) for when, _, to in cb.transitions] == [
        (0.0, State.OPEN),
        (10.5, State.HALF_OPEN),
        (10.5, State.OPEN),
        (20.6, State.HALF_OPEN),
        (20.6, State.CLOSED),
    ]


def test_a_result_from_before_a_state_change_is_dropped() -> None:
    cb, _ = breaker(STACK)
    late = cb.allow()
    calls(cb, TRIP)
    late(True)  # the success of a call made while closed does not close the open breaker
    assert cb.current_state() is State.OPEN


def test_gobreaker_defaults_fill_zero_settings() -> None:
    # Timeout <= 0 means 60 s, MaxRequests 0 means 1 (gobreaker v2 NewCircuitBreaker).
    zero = BreakerSettings(
        interval=0.0, max_consecutive_failures=0, max_failure_ratio=0.1, timeout=0.0, max_retry_requests=0
    )
    cb, clock = breaker(zero)
    calls(cb, "f")
    clock.now = 59.9
    with pytest.raises(BreakerOpenError):
        cb.allow()
    clock.now = 60.1
    cb.allow()
    with pytest.raises(TooManyRequestsError):
        cb.allow()


# --- the stack's settings ------------------------------------------------------------------------------------------


def test_stacks_give_zitadel_the_failover_breaker() -> None:
    for stack in ("dev", "prod"):
        cfg = stack_config(stack)
        assert cfg.breaker_timeout == "10s"
        assert BreakerSettings.of(cfg) == STACK


def found(stack: str, overrides: dict[str, Any]) -> list[str]:
    config, secrets = read_stack_config(PROJECT_DIR / f"Pulumi.{stack}.yaml")
    try:
        load(stack, deep_merge(config, overrides), secrets)
    except StackConfigError as exc:
        return exc.violations
    return []


def with_breaker(down_after: int | None = None, **breaker: Any) -> dict[str, Any]:
    overrides: dict[str, Any] = {"zitadel": {"cache": {"circuitBreaker": breaker}}}
    if down_after is not None:
        overrides["redis"] = {"downAfterMilliseconds": down_after}
    return overrides


@pytest.mark.parametrize(
    ("down_after", "timeout"),
    [(3000, "8s"), (5000, "10s"), (5500, "10500ms"), (60000, "65s")],
)
def test_the_default_open_time_follows_down_after(down_after: int, timeout: str) -> None:
    config, secrets = read_stack_config(PROJECT_DIR / "Pulumi.prod.yaml")
    cfg = load("prod", deep_merge(config, with_breaker(down_after)), secrets)
    assert cfg.breaker_timeout == timeout


SHORT = (
    "prod: zitadel.cache.circuitBreaker.timeout: {t} is shorter than Sentinel needs to replace the master "
    "(redis.downAfterMilliseconds + 1 s = 6 s): every probe until then hits the dead master"
)
LONG = (
    "prod: zitadel.cache.circuitBreaker.timeout: {t} keeps ZITADEL off Redis long after the failover (about 8 s to "
    "the new master through its Service): at most 16 s"
)


@pytest.mark.parametrize(
    ("timeout", "expected"),
    [
        ("5999ms", [SHORT.format(t="5999ms")]),
        ("6s", []),
        ("16s", []),
        ("16100ms", [LONG.format(t="16100ms")]),
        # ZITADEL's own default: a minute without cache for a failover of 8 s.
        ("60s", [LONG.format(t="60s")]),
    ],
)
def test_open_time_must_fit_the_failover(timeout: str, expected: list[str]) -> None:
    assert found("prod", with_breaker(timeout=timeout)) == expected


def test_zitadels_default_open_time_fits_only_the_charts_sentinel_defaults() -> None:
    # With the chart's down-after of 60 s a 60 s open time is even too short.
    assert found("prod", with_breaker(60000, timeout="60s")) == [
        "prod: zitadel.cache.circuitBreaker.timeout: 60s is shorter than Sentinel needs to replace the master "
        "(redis.downAfterMilliseconds + 1 s = 61 s): every probe until then hits the dead master"
    ]


@pytest.mark.parametrize(
    ("ratio", "early"),
    [
        # ZITADEL's default: one failure among a window's first 9 calls is more than 10 %.
        (0.1, 9),
        (0.25, 3),
        (0.5, 1),
    ],
)
def test_a_failure_ratio_is_refused(ratio: float, early: int) -> None:
    assert found("dev", with_breaker(maxFailureRatio=ratio)) == [
        f"dev: zitadel.cache.circuitBreaker.maxFailureRatio: {ratio:g} opens the breaker for 10s when one of the "
        f"first {early} calls of a window (interval 60s) fails: set 0 and let maxConsecutiveFailures trip it"
    ]
    # Without a window the ratio counts from the pod's start: as bad, and refused alike.
    assert found("dev", with_breaker(interval="0", maxFailureRatio=ratio)) == [
        f"dev: zitadel.cache.circuitBreaker.maxFailureRatio: {ratio:g} opens the breaker for 10s when one of the "
        f"first {early} calls of a window (interval 0) fails: set 0 and let maxConsecutiveFailures trip it"
    ]
    assert found("dev", with_breaker(interval="0", maxFailureRatio=0)) == []


def test_a_breaker_that_never_opens_is_refused() -> None:
    never = [
        "dev: zitadel.cache.circuitBreaker.maxConsecutiveFailures: 0 turns off the one trip left with "
        "maxFailureRatio 0: the breaker never opens"
    ]
    assert found("dev", with_breaker(maxConsecutiveFailures=0)) == never
    # A ratio of 1 can never be exceeded: it does not open the breaker either.
    assert found("dev", with_breaker(maxConsecutiveFailures=0, maxFailureRatio=1)) == never
