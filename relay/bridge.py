"""The bridge: poll ZITADEL's Event API, write each event once into its priority stream, advance the cursor.

Read (``zitadel-event-source.md`` §4): ``range {since: cursor, until: now - clockSkew}``, ascending, up to 1000.
ZITADEL's barrier waits for every write in flight when the request arrives, so everything created before ``until``
is visible: a page shorter than the limit completes the window. A full page continues at once from its last
creation date minus the 1 ms overlap; a full page that cannot move the cursor (more than a page of events inside
that millisecond, e.g. a bulk write at one instant) is read again split by aggregate type (then by event type).

Write: per event one script call (dedup record ``HSETNX`` + ``XADD``), pipelined; ``WAIT 1``; only then the cursor.
Anything that fails is read and written again, deduplicated.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Final

import redis
import redis.sentinel

from relay import logs
from relay.events import (
    Event,
    UnusableEventError,
    dead_letter_fields,
    dedup_id,
    entry_fields,
    parse_event,
    parse_timestamp,
)
from relay.metrics import Health, Metrics
from relay.settings import Settings
from relay.source import MAX_AGGREGATE_TYPES, MAX_EVENT_TYPES, ApiError, EventApi, MalformedAnswerError
from relay.store import SEEN_BUCKET_US, Item, NotAcknowledged, Store, pack_fields, seen_bucket, write_refusal

log = logging.getLogger("relay.bridge")

#: The overlap of consecutive reads (the design's ``since: cursor - 1 ms``); re-read events are deduplicated.
OVERLAP_US: Final = 1000


class DenseWindowError(RuntimeError):
    """A window holds more events of one type at one instant than a page: the cursor cannot pass it safely."""


class LeaseLostError(RuntimeError):
    """Another bridge took the lease: stop writing."""


#: ``relay_errors_total{kind}`` of a failed poll, the first class that matches (subclasses before their bases).
_ERROR_KINDS: Final[tuple[tuple[type[Exception], str], ...]] = (
    (NotAcknowledged, "not_acknowledged"),
    (DenseWindowError, "dense_window"),
    (MalformedAnswerError, "event_api_answer"),
    (ApiError, "event_api"),
    (redis.RedisError, "redis"),
)


@dataclass
class PageOutcome:
    read: int = 0
    written: int = 0
    duplicates: int = 0
    dead_lettered: int = 0


def now_us() -> int:
    return time.time_ns() // 1000


class Bridge:
    def __init__(
        self,
        settings: Settings,
        *,
        api: EventApi,
        client: redis.Redis,
        metrics: Metrics | None = None,
        clock: Callable[[], int] = now_us,
        holder: str | None = None,
        use_lease: bool = True,
    ) -> None:
        self.settings = settings
        self.api = api
        self.metrics = metrics or Metrics()
        self.health = Health(stale_after=max(30.0, 3 * settings.lease.ttl))
        self.clock = clock
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.use_lease = use_lease
        p, s = settings.publishing, settings.source
        self.store = Store(
            client,
            settings.instance,
            dedup_keep_us=int(s.dedup_ttl * 1e6),
            max_stream_length=p.max_stream_length,
            batch_size=p.batch_size,
            require_replica_ack=p.require_replica_ack,
            replica_ack_timeout_ms=int(p.replica_ack_timeout * 1000),
            dead_letter_cap=(settings.streams.dead_letter, p.dead_letter_max_length),
        )
        self._stop = threading.Event()
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-read-ahead")
        self._leader = False
        self._lease_renewed = 0.0
        self._last_look_back = time.monotonic()
        self._backoff = p.retry_backoff
        self._pruned_at: int | None = None
        self._trimmed_at: float | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Finish the page in progress, then return from ``run`` (SIGTERM)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        log.info("bridge starting", extra=logs.fields(instance=self.settings.instance, holder=self.holder))
        try:
            while not self.stopping:
                self.health.beat()
                try:
                    if self.use_lease and not self._hold_lease():
                        self._wait(self.settings.lease.renew_every)
                        continue
                    # Before the poll: trimming needs no new event, and Redis takes it even when it refuses writes.
                    self.maybe_trim()
                    self.poll()
                    self.maybe_look_back()
                    self._backoff = self.settings.publishing.retry_backoff
                    self.metrics.stalled.set(0)
                    self.metrics.write_stalled.set(0)
                    self._wait(self.settings.source.poll_interval)
                except LeaseLostError:
                    log.warning("lease lost to another bridge", extra=logs.fields(holder=self.holder))
                except (redis.RedisError, OSError, ApiError, DenseWindowError) as exc:
                    self._failed(exc)
        finally:
            self._release()
            log.info("bridge stopped", extra=logs.fields(holder=self.holder))

    def _failed(self, exc: Exception) -> None:
        kind = next((k for cls, k in _ERROR_KINDS if isinstance(exc, cls)), "network")
        self.metrics.errors.labels(kind).inc()
        if isinstance(exc, DenseWindowError):
            self.metrics.stalled.set(1)
        refused = write_refusal(exc)
        if refused is not None:
            # Nothing is skipped: the page is written again (deduplicated) once Redis takes writes.
            self.metrics.write_refused.labels(refused).inc()
            self.metrics.write_stalled.set(1)
        if isinstance(exc, redis.sentinel.MasterNotFoundError):
            # redis-py's text carries the repr of every sentinel client (kilobytes): the class and the set say it.
            error = f"MasterNotFoundError: no sentinel names a usable master of {self.settings.redis.master_set!r}"
        else:
            error = logs.error_text(exc)
        log.warning("poll failed; retrying", extra=logs.fields(kind=kind, error=error, backoff=self._backoff))
        self._wait(self._backoff)
        self._backoff = min(self._backoff * 2, self.settings.publishing.max_retry_backoff)

    def _wait(self, seconds: float) -> None:
        self._stop.wait(seconds)

    # --- trimming ----------------------------------------------------------------------------------------------------

    def maybe_trim(self, force: bool = False) -> dict[tuple[str, str], int]:
        """Every ``trimInterval``: drop every stream's entries older than ``maxStreamAge`` and those beyond its cap.
        ``XADD MAXLEN ~`` only trims the stream it writes, when an event arrives; this bounds all four at all times."""
        p, streams = self.settings.publishing, self.settings.streams
        if not force and self._trimmed_at is not None and time.monotonic() - self._trimmed_at < p.trim_interval:
            return {}
        caps = dict.fromkeys(streams.by_priority(), p.max_stream_length)
        caps[streams.dead_letter] = p.dead_letter_max_length
        dropped = self.store.trim(caps, min_id_ms=(self.clock() - int(p.max_stream_age * 1e6)) // 1000)
        self._trimmed_at = time.monotonic()
        done = {(stream, reason): count for (stream, reason), count in dropped.items() if count}
        for (stream, reason), count in done.items():
            self.metrics.trimmed.labels(stream, reason).inc(count)
        if done:
            log.info("trimmed streams", extra=logs.fields(dropped={f"{s} ({r})": n for (s, r), n in done.items()}))
        return dropped

    # --- lease -------------------------------------------------------------------------------------------------------

    def _hold_lease(self) -> bool:
        held = self.store.hold_lease(self.holder, int(self.settings.lease.ttl * 1000))
        self.health.redis_ok()
        if held != self._leader:
            log.info("leadership changed", extra=logs.fields(holder=self.holder, leader=held))
        self._leader = held
        self._lease_renewed = time.monotonic()
        self.metrics.leader.set(1 if held else 0)
        return held

    def _renew_if_due(self) -> None:
        due = time.monotonic() - self._lease_renewed >= self.settings.lease.renew_every
        if self.use_lease and due and not self._hold_lease():
            raise LeaseLostError(self.holder)

    def _release(self) -> None:
        if not (self.use_lease and self._leader):
            return
        with contextlib.suppress(redis.RedisError):  # otherwise it expires on its own
            self.store.release_lease(self.holder)
        self._leader = False
        self.metrics.leader.set(0)

    # --- reading -----------------------------------------------------------------------------------------------------

    def _start_cursor(self) -> int:
        stored = self.store.cursor()
        self.health.redis_ok()
        if stored is not None:
            return stored
        if self.settings.source.start_from == "now":
            return self.clock() - int(self.settings.source.clock_skew * 1e6)
        return 0

    def poll(self) -> PageOutcome:
        """Read and write until caught up with ``now - clockSkew``; the cursor is stored after every page."""
        started = time.monotonic()
        until = self.clock() - int(self.settings.source.clock_skew * 1e6)
        outcome = self._drain(self._start_cursor(), until, persist=True)
        self.metrics.poll_duration.observe(time.monotonic() - started)
        return outcome

    def maybe_look_back(self, force: bool = False) -> int:
        """Every ``lookBackPeriod``: read the last ``lookBackWindow`` again; what is new was missed (a repair)."""
        s = self.settings.source
        if not force and time.monotonic() - self._last_look_back < s.look_back_period:
            return 0
        self._last_look_back = time.monotonic()
        cursor = self._start_cursor()
        since = max(0, min(cursor, self.clock()) - int(s.look_back_window * 1e6))
        outcome = self._drain(since, cursor + 1, persist=False)
        repaired = outcome.written + outcome.dead_lettered
        if repaired:
            self.metrics.look_back_repairs.inc(repaired)
            log.warning(
                "look-back found events the polls missed; raise events.source.clockSkew",
                extra=logs.fields(repaired=repaired),
            )
        return repaired

    def _drain(self, since: int, until: int, *, persist: bool) -> PageOutcome:
        total = PageOutcome()
        limit = self.settings.source.page_size
        # The next full page's read runs while this one is written: it only needs this page's last creation date.
        ahead: Future[list[Any]] | None = None
        try:
            while since < until:
                self._renew_if_due()
                self.health.beat()
                raw = ahead.result() if ahead else self.api.list_events(since_us=since, until_us=until, limit=limit)
                ahead = None
                parsed = self._parse(raw)
                stamps = _stamps(raw, parsed)
                if len(raw) < limit:
                    # Complete up to ``until``; keep the overlap for the next poll.
                    nxt = max(since, until - OVERLAP_US)
                    self._add(total, self._write(raw, parsed, nxt if persist else None))
                    if persist:
                        self._prune_if_due(nxt)
                    return total
                if not stamps:
                    # A full page without one creation date: nothing tells where the page ends. Its events go to the
                    # dead-letter stream (once: deduplicated), and the cursor stays; the loop backs off and alerts.
                    self._add(total, self._write(raw, parsed, None))
                    raise DenseWindowError(
                        f"a full page of {len(raw)} events without a creation date after {since} µs: "
                        "the cursor cannot move past them"
                    )
                first, last = stamps[0], stamps[-1]
                if first != last and last - OVERLAP_US > since:
                    nxt = last - OVERLAP_US
                    ahead = self._reader.submit(self.api.list_events, since_us=nxt, until_us=until, limit=limit)
                    self._add(total, self._write(raw, parsed, nxt if persist else None))
                    since = nxt
                    if persist:
                        self._prune_if_due(since)
                    if self.stopping:
                        break  # the page in progress is written; SIGTERM ends the catch-up here
                    continue
                # More than a page inside (since, last]: read that window completely, split, then continue after it.
                dense = self._read_dense(since, last + 1)
                self._add(total, self._write(dense, self._parse(dense), last if persist else None))
                since = last
                if self.stopping:
                    break
        finally:
            if ahead is not None:
                # The read shares the API connection: let it finish before anything else uses it.
                wait([ahead])
        return total

    def _prune_if_due(self, cursor: int) -> None:
        """Once the cursor enters a new dedup bucket: delete the buckets ``dedupTtl`` behind it (they have no TTL, so
        memory pressure never evicts them; this is what bounds them)."""
        bucket = cursor // SEEN_BUCKET_US
        if self._pruned_at == bucket:
            return
        deleted = self.store.prune_seen()
        self._pruned_at = bucket
        if deleted:
            log.info("deleted old dedup buckets", extra=logs.fields(buckets=deleted))

    def _read_dense(self, since: int, until: int) -> list[Any]:
        """Every event of ``(since, until)``, read in slices that each fit a page: by aggregate types (10 per
        request, then one), then by event types (30 per request, then one). A single type still too dense stalls."""
        found: list[Any] = []
        event_types: list[str] | None = None
        for group in _chunks(self.api.aggregate_types(), MAX_AGGREGATE_TYPES):
            page = self._slice(since, until, group, ())
            if page is not None:
                found += page
                continue
            for aggregate in group:
                page = self._slice(since, until, [aggregate], ()) if len(group) > 1 else None
                if page is not None:
                    found += page
                    continue
                if event_types is None:
                    event_types = self.api.event_types()
                for chunk in _chunks(event_types, MAX_EVENT_TYPES):
                    page = self._slice(since, until, [aggregate], chunk)
                    if page is not None:
                        found += page
                        continue
                    for event_type in chunk:
                        page = self._slice(since, until, [aggregate], [event_type])
                        if page is None:
                            raise DenseWindowError(
                                f"more than a page of {event_type} events in ({since}, {until}) µs: "
                                "the Event API cannot page through them"
                            )
                        found += page
        log.info("read a dense window in slices", extra=logs.fields(events=len(found), since=since, until=until))
        return found

    def _slice(
        self, since: int, until: int, aggregate_types: Sequence[str], event_types: Sequence[str]
    ) -> list[Any] | None:
        """The events of one slice, or None when the slice fills a page (and so may be incomplete)."""
        limit = self.settings.source.page_size
        self._renew_if_due()
        page = self.api.list_events(
            since_us=since, until_us=until, limit=limit, aggregate_types=aggregate_types, event_types=event_types
        )
        return page if len(page) < limit else None

    # --- writing -----------------------------------------------------------------------------------------------------

    @staticmethod
    def _parse(raw: Iterable[Any]) -> list[Event | UnusableEventError]:
        parsed: list[Event | UnusableEventError] = []
        for item in raw:
            try:
                parsed.append(parse_event(item))
            except UnusableEventError as exc:
                parsed.append(exc)
        return parsed

    @staticmethod
    def _add(total: PageOutcome, page: PageOutcome) -> None:
        total.read += page.read
        total.written += page.written
        total.duplicates += page.duplicates
        total.dead_lettered += page.dead_lettered

    def _write(
        self, raw: Sequence[Any], parsed: Sequence[Event | UnusableEventError], cursor: int | None
    ) -> PageOutcome:
        s = self.settings
        items: list[Item] = []
        labels: list[tuple[str, str]] = []  # (stream, dead-letter reason or "")
        newest = 0
        for original, event in zip(raw, parsed, strict=True):
            if isinstance(event, UnusableEventError):
                key, fields = dead_letter_fields(s.instance, original, event.reason, event.detail)
                bucket = seen_bucket(_raw_stamp(original))
                items.append(Item.of(key, bucket, s.streams.dead_letter, fields))
                labels.append((s.streams.dead_letter, event.reason))
                continue
            priority, fields = entry_fields(s.instance, event)
            packed = pack_fields(fields)
            size = len(packed.encode())
            if size > s.source.max_event_bytes:
                detail = f"entry of {size} bytes > {s.source.max_event_bytes}"
                _key, dl = dead_letter_fields(s.instance, original, "too_large", detail)
                items.append(Item.of(dedup_id(event), seen_bucket(event.created_us), s.streams.dead_letter, dl))
                labels.append((s.streams.dead_letter, "too_large"))
                continue
            items.append(Item(dedup_id(event), seen_bucket(event.created_us), s.streams.of(priority), packed))
            labels.append((s.streams.of(priority), ""))
            newest = max(newest, event.created_us)
        result = self.store.write(items, cursor)
        self.health.redis_ok()
        outcome = PageOutcome(read=len(raw))
        self.metrics.events_read.inc(len(raw))
        for (stream, reason), written in zip(labels, result.written, strict=True):
            if not written:
                outcome.duplicates += 1
                self.metrics.duplicates.inc()
            elif reason:
                outcome.dead_lettered += 1
                self.metrics.dead_lettered.labels(reason).inc()
            else:
                outcome.written += 1
                self.metrics.written.labels(stream).inc()
        if newest:
            self.metrics.freshness.set(max(0.0, (self.clock() - newest) / 1e6))
        if raw:
            log.debug(
                "page written",
                extra=logs.fields(read=outcome.read, written=outcome.written, duplicates=outcome.duplicates),
            )
        return outcome


def _raw_stamp(raw: Any) -> int | None:
    """The creation date of an event the bridge could not use, if it has a readable one."""
    text = raw.get("creationDate") if isinstance(raw, dict) else None
    try:
        return parse_timestamp(text) if isinstance(text, str) else None
    except ValueError:
        return None


def _stamps(raw: Sequence[Any], parsed: Sequence[Event | UnusableEventError]) -> list[int]:
    """The creation dates of a page, in order, of usable events and of unusable ones that still carry one."""
    found = []
    for original, event in zip(raw, parsed, strict=True):
        stamp = event.created_us if isinstance(event, Event) else _raw_stamp(original)
        if stamp is not None:
            found.append(stamp)
    return found


def _chunks(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]
