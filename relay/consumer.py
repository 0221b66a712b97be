"""The consumers' side: drain the priority streams with consumer groups, as a background job queue.

- One consumer group per application, on each of the three streams; many consumers (processes) per group.
- ``high`` before ``normal`` before ``low``: each turn takes the most urgent non-empty stream, so a busy low stream
  delays a high event by at most one batch.
- An entry is acknowledged (``XACK``) only after the handler returned; a failure leaves it pending, and it is
  delivered again once it has been idle ``claim_idle_ms`` (``XAUTOCLAIM``) — which is also how the entries of a
  consumer that died are taken over.
- An entry whose handler failed on its ``max_deliveries``-th delivery (``events.publishing.maxRetries``), or that has
  been delivered more often than that without an answer (its consumers keep dying), moves to the dead-letter stream
  with the reason, atomically with its ``XACK``. ``replay_dead_letter`` puts chosen entries back.
- Nothing the streams lose to trimming goes unreported: an entry deleted while pending, and a run of entries trimmed
  before the group read them, each become one dead letter with the reason ``trimmed`` and are counted.
- Delivery is at least once; ``Deduplicator`` skips an event whose handler already succeeded.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, cast

import redis
from prometheus_client import REGISTRY, CollectorRegistry, Counter

from relay import logs
from relay.settings import Streams

log = logging.getLogger("relay.consumer")

DEAD_LETTER_PREFIX: Final = "dead_letter."
#: ``MAXLEN ~`` of the consumers' dead-letter writes, unless the constructor is given the stack's value.
DEFAULT_DEAD_LETTER_MAX_LENGTH: Final = 100_000
#: The consumers' own keys in the events DB (the ``event-consumer`` ACL user's pattern; ``stacks.names`` holds the
#: same prefix for the program, and a test ties the two).
KEY_PREFIX: Final = "consumer:"
#: How long a handled event's mark lives: duplicates come within minutes of a failover or a consumer's death.
DEFAULT_DEDUP_TTL_SECONDS: Final = 3600
TRIMMED: Final = "trimmed"
#: The states of a dedup mark (its value: the state, then the stream and entry ID that set it).
_PENDING: Final = "pending"
_DONE: Final = "done"
_DELETED_WHILE_PENDING: Final = "deleted from the stream while pending: trimmed before it was acknowledged"
_TRIMMED_UNREAD: Final = "trimmed from the stream before the group read it"
_READ_PAST: Final = "the group read past entries the stream no longer held; where they were is unknown"

#: XADD the entry (with its dead-letter fields) to the dead-letter stream and XACK it, in one step.
#: KEYS: dead-letter stream, source stream. ARGV: group, entry ID, dead-letter MAXLEN, then the field/value pairs.
_DEAD_LETTER_SCRIPT: Final = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4))
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
return id
"""
#: Put a dead-lettered entry back on its stream and delete it from the dead-letter stream, in one step.
#: KEYS: target stream, dead-letter stream. ARGV: dead-letter entry ID, then the field/value pairs.
_REPLAY_SCRIPT: Final = """
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
redis.call('XDEL', KEYS[2], ARGV[1])
return id
"""
#: XGROUP CREATE with Redis's read counter (ENTRIESREAD) set, which the gap check needs from the start: start ``0``
#: counts what trimming took before the group existed as read (none of it was the group's), ``$`` counts everything.
#: KEYS: stream. ARGV: group, start ID.
_CREATE_GROUP_SCRIPT: Final = """
local info = redis.pcall('XINFO', 'STREAM', KEYS[1])
local read
if info.err then
  read = 0
else
  local s = {}
  for i = 1, #info, 2 do s[info[i]] = info[i + 1] end
  if ARGV[2] == '$' then read = s['entries-added']
  elseif ARGV[2] == '0' or ARGV[2] == '0-0' then read = s['entries-added'] - s['length'] end
end
if read then
  return redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], ARGV[2], 'MKSTREAM', 'ENTRIESREAD', read)
end
return redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], ARGV[2], 'MKSTREAM')
"""
#: XAUTOCLAIM, and dead-letter the IDs it reports deleted: Redis 7 drops those from the pending list in the same
#: call, so outside this script a consumer dying in between would lose them without a trace.
#: KEYS: stream, dead-letter stream. ARGV: group, consumer, min idle ms, start ID, count, dead-letter MAXLEN, detail.
#: Returns XAUTOCLAIM's reply: next start ID, claimed entries, deleted IDs.
_CLAIM_SCRIPT: Final = """
local reply = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
for _, id in ipairs(reply[3]) do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'dead_letter.reason', 'trimmed',
    'dead_letter.stream', KEYS[1], 'dead_letter.id', id, 'dead_letter.group', ARGV[1], 'dead_letter.detail', ARGV[7])
end
return reply
"""
#: Report what the stream lost before the group read it, then read (XREADGROUP ... >), in one step: no read can pass
#: a gap unreported, and of two consumers of a group only the first reports it (it moves the group past it).
#: From Redis's counters (XINFO): the group's last-delivered ID L and entries-read R, the stream's entries-added A,
#: length N, first entry F, last-generated ID G and max-deleted-entry-id D (XDEL only; trimming leaves it). IDs
#: between L and F (G when empty) are gone; A - R - N of them existed, when no XDEL at or after F blurs the count.
#: KEYS: stream, dead-letter stream. ARGV: group, consumer, count, dead-letter MAXLEN, then the details of a gap, of
#: a gap of unknown size, of a read past a gap.
#: Returns {XREADGROUP's reply, 1 if a gap was reported, its size or -1, the ID after which it began or false,
#: the ID the group was moved to}.
_READ_SCRIPT: Final = """
local stream, group = KEYS[1], ARGV[1]
local function map(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end
local function less(a, b)
  local am, as = string.match(a, '^(%d+)%-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)%-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
local function before(id)
  local ms, seq = string.match(id, '^(%d+)%-(%d+)$')
  if seq ~= '0' then return ms .. '-' .. string.format('%.0f', tonumber(seq) - 1) end
  return string.format('%.0f', tonumber(ms) - 1) .. '-18446744073709551615'
end
local groups = redis.pcall('XINFO', 'GROUPS', stream)
local g
if not groups.err then
  for _, flat in ipairs(groups) do
    local f = map(flat)
    if f['name'] == group then g = f end
  end
end
local gap, size, after, through, entries_read = false, -1, false, false, false
if g then
  local s = map(redis.call('XINFO', 'STREAM', stream))
  local last, read = g['last-delivered-id'], g['entries-read']
  local added, length, deleted = s['entries-added'], s['length'], s['max-deleted-entry-id']
  local first = s['first-entry'] and s['first-entry'][1]
  through = first and before(first) or s['last-generated-id']
  if less(last, through) then
    after = last
    local xdel_ahead = deleted ~= '0-0' and first and not less(deleted, first)
    if read and not xdel_ahead then
      if added - length - read > 0 then
        gap, size, entries_read = true, added - length - read, added - length
      end
    elseif (deleted ~= '0-0' and less(last, deleted) and not less(through, deleted))
        or (read and added - length - read > 0) then
      gap = true
    end
  elseif read and last == s['last-generated-id'] and added > read then
    gap, size, through, entries_read = true, added - read, last, added
  end
  if gap then
    local fields = {'dead_letter.reason', 'trimmed', 'dead_letter.stream', stream, 'dead_letter.group', group}
    if after then
      table.insert(fields, 'dead_letter.after')
      table.insert(fields, after)
    end
    table.insert(fields, 'dead_letter.through')
    table.insert(fields, through)
    if size >= 0 then
      table.insert(fields, 'dead_letter.count')
      table.insert(fields, string.format('%.0f', size))
    end
    table.insert(fields, 'dead_letter.detail')
    table.insert(fields, (not after and ARGV[7]) or (size >= 0 and ARGV[5]) or ARGV[6])
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', unpack(fields))
    if entries_read then
      redis.call('XGROUP', 'SETID', stream, group, through, 'ENTRIESREAD', string.format('%.0f', entries_read))
    else
      redis.call('XGROUP', 'SETID', stream, group, through)
    end
  end
end
local got = redis.call('XREADGROUP', 'GROUP', group, ARGV[2], 'COUNT', ARGV[3], 'STREAMS', stream, '>')
return {got, gap and 1 or 0, size, after, through}
"""


class EventKey(NamedTuple):
    """What makes an event unique: ZITADEL's primary key within its instance, and the instance."""

    instance: str
    aggregate_type: str
    aggregate_id: str
    sequence: str


@dataclass(frozen=True)
class StreamEntry:
    """One event as a consumer sees it."""

    stream: str
    id: str
    fields: dict[str, str]
    #: How often Redis has delivered this entry, this time included.
    deliveries: int

    @property
    def taxonomy(self) -> str:
        return self.fields.get("taxonomy", "")

    @property
    def payload(self) -> dict[str, Any]:
        loaded = json.loads(self.fields.get("payload", "{}"))
        return loaded if isinstance(loaded, dict) else {}

    @property
    def event_key(self) -> EventKey | None:
        """The same for every copy of the event, whatever its entry ID (``None``: an entry without the fields)."""
        parts = [self.fields.get(name, "") for name in EventKey._fields]
        return EventKey(*parts) if all(parts) else None


Handler = Callable[[StreamEntry], None]


class ConsumerMetrics:
    """The consumers' counters. By default in prometheus_client's registry, the one a worker's ``/metrics`` serves."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = REGISTRY if registry is None else registry
        self.dead_lettered = Counter(
            "relay_consumer_dead_lettered",
            "Dead letters a consumer group wrote, per source stream and reason",
            ["group", "stream", "reason"],
            registry=r,
        )
        self.trimmed = Counter(
            "relay_consumer_trimmed_entries",
            "Entries a group lost to trimming: deleted while pending, or trimmed unread (when Redis knows how many)",
            ["group", "stream"],
            registry=r,
        )
        self.duplicates = Counter(
            "relay_consumer_duplicates_skipped",
            "Entries acknowledged without their handler: the event was handled before under another entry",
            ["group"],
            registry=r,
        )


_shared_metrics: ConsumerMetrics | None = None
_shared_lock = threading.Lock()


def shared_metrics() -> ConsumerMetrics:
    """One set of counters per process in the default registry (a metric name registers once)."""
    global _shared_metrics
    with _shared_lock:
        if _shared_metrics is None:
            _shared_metrics = ConsumerMetrics()
        return _shared_metrics


class Consumer:
    def __init__(
        self,
        client: redis.Redis,
        *,
        group: str,
        name: str,
        streams: Streams,
        max_deliveries: int,
        claim_idle_ms: int = 30_000,
        batch: int = 50,
        block_ms: int = 1000,
        dead_letter_max_length: int = DEFAULT_DEAD_LETTER_MAX_LENGTH,
        metrics: ConsumerMetrics | None = None,
    ) -> None:
        self.client = client
        self.group = group
        self.name = name
        self.streams = streams
        self.max_deliveries = max(1, max_deliveries)
        self.claim_idle_ms = claim_idle_ms
        self.batch = batch
        self.block_ms = block_ms
        self.dead_letter_max_length = dead_letter_max_length
        self.metrics = metrics or shared_metrics()
        # Where each stream's XAUTOCLAIM scan goes on: the whole pending list is visited, not only its first page.
        self._claim_from = dict.fromkeys(streams.by_priority(), "0-0")
        self._create_group_script = client.register_script(_CREATE_GROUP_SCRIPT)
        self._dead_letter_script = client.register_script(_DEAD_LETTER_SCRIPT)
        self._claim_script = client.register_script(_CLAIM_SCRIPT)
        self._read_script = client.register_script(_READ_SCRIPT)

    def ensure_groups(self, start_id: str = "0") -> None:
        """Create the group on each stream (and the stream), reading from ``start_id`` (``0``: all history, ``$``:
        only new entries), with Redis's read counter set. A group created with another start ID, or by another
        client, has none until its first read: a trim before that read cannot be reported."""
        for stream in self.streams.by_priority():
            try:
                self._create_group_script(keys=[stream], args=[self.group, start_id])
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def run(self, handler: Handler, stop: threading.Event) -> None:
        while not stop.is_set():
            self.run_once(handler)

    def run_once(self, handler: Handler, block: bool = True) -> int:
        """One turn: stale entries first, then the most urgent stream that has new entries. Returns how many entries
        it handled or dead-lettered."""
        done = self._claim_stale(handler)
        if done:
            return done
        for stream in self.streams.by_priority():
            entries = self._read(stream)
            if entries:
                for entry_id, fields in entries:
                    self._handle(StreamEntry(stream, entry_id, fields, 1), handler)
                return len(entries)
        if not block:
            return 0
        # Nothing anywhere: wait for the next entry on any stream. A trim in the instant since the reads above that
        # passes undelivered entries makes this read skip them; the next read reports them (counted, place unknown).
        got = self.client.xreadgroup(
            self.group, self.name, dict.fromkeys(self.streams.by_priority(), ">"), count=self.batch, block=self.block_ms
        )
        return self._handle_all(got or [], handler)

    def _handle_all(self, got: Iterable[Any], handler: Handler) -> int:
        by_stream = {_text(stream): entries for stream, entries in got}
        count = 0
        for stream in self.streams.by_priority():  # a blocking read can return several streams: urgent first
            for entry_id, fields in by_stream.get(stream, []):
                self._handle(StreamEntry(stream, _text(entry_id), _decoded(fields), 1), handler)
                count += 1
        return count

    def _read(self, stream: str) -> list[tuple[str, dict[str, str]]]:
        reply = self._read_script(
            keys=[stream, self.streams.dead_letter],
            args=[
                self.group,
                self.name,
                self.batch,
                self.dead_letter_max_length,
                _TRIMMED_UNREAD,
                _TRIMMED_UNREAD + " (how many is unknown: entries deleted with XDEL blur Redis's counters)",
                _READ_PAST,
            ],
        )
        got, gap, size, after, through = cast(Sequence[Any], reply)
        if gap:
            self.metrics.dead_lettered.labels(self.group, stream, TRIMMED).inc()
            if size >= 0:
                self.metrics.trimmed.labels(self.group, stream).inc(size)
            log.warning(
                "entries trimmed before the group read them",
                extra=logs.fields(
                    stream=stream, group=self.group, count=size if size >= 0 else None, after=after, through=through
                ),
            )
        if not got:
            return []
        return [(_text(entry_id), _pairs(flat)) for entry_id, flat in got[0][1]]

    def _claim_stale(self, handler: Handler) -> int:
        for stream in self.streams.by_priority():
            reply = cast(
                Sequence[Any],
                self._claim_script(
                    keys=[stream, self.streams.dead_letter],
                    args=[
                        self.group,
                        self.name,
                        self.claim_idle_ms,
                        self._claim_from[stream],
                        self.batch,
                        self.dead_letter_max_length,
                        _DELETED_WHILE_PENDING,
                    ],
                ),
            )
            self._claim_from[stream] = _text(reply[0])
            deleted = [_text(entry_id) for entry_id in reply[2]]
            if deleted:
                self.metrics.dead_lettered.labels(self.group, stream, TRIMMED).inc(len(deleted))
                self.metrics.trimmed.labels(self.group, stream).inc(len(deleted))
                log.warning(
                    "pending entries deleted from the stream, moved to the dead-letter stream",
                    extra=logs.fields(stream=stream, group=self.group, ids=deleted),
                )
            claimed = [(_text(entry_id), _pairs(flat)) for entry_id, flat in reply[1]]
            if claimed:
                pending = self.client.xpending_range(
                    stream,
                    self.group,
                    min=claimed[0][0],
                    max=claimed[-1][0],
                    count=len(claimed),
                    consumername=self.name,
                )
                deliveries = {_text(p["message_id"]): int(p["times_delivered"]) for p in pending}
                for entry_id, fields in claimed:
                    self._handle(StreamEntry(stream, entry_id, fields, deliveries.get(entry_id, 1)), handler)
            if claimed or deleted:
                return len(claimed) + len(deleted)
        return 0

    def _handle(self, entry: StreamEntry, handler: Handler) -> None:
        if entry.deliveries > self.max_deliveries:
            # Delivered that often without an answer: whoever took it died while handling it.
            self._dead_letter(entry, "max_deliveries", "delivered without an acknowledgement")
            return
        try:
            handler(entry)
        except Exception as exc:
            if entry.deliveries >= self.max_deliveries:
                self._dead_letter(entry, "max_retries", f"{type(exc).__name__}: {exc}")
            else:
                log.info(
                    "handler failed; the entry stays pending",
                    extra=logs.fields(
                        stream=entry.stream, id=entry.id, deliveries=entry.deliveries, error=type(exc).__name__
                    ),
                )
            return
        self.client.xack(entry.stream, self.group, entry.id)

    def _dead_letter(self, entry: StreamEntry, reason: str, error: str) -> None:
        fields = {k: v for k, v in entry.fields.items() if not k.startswith(DEAD_LETTER_PREFIX)}
        fields.update(
            {
                "dead_letter.reason": reason,
                "dead_letter.stream": entry.stream,
                "dead_letter.id": entry.id,
                "dead_letter.group": self.group,
                "dead_letter.deliveries": str(entry.deliveries),
                # Exception texts are the handler's; keep credentials out of them.
                "dead_letter.error": error[:300],
            }
        )
        args: list[Any] = [self.group, entry.id, self.dead_letter_max_length]
        for name, value in fields.items():
            args += (name, value)
        self._dead_letter_script(keys=[self.streams.dead_letter, entry.stream], args=args)
        self.metrics.dead_lettered.labels(self.group, entry.stream, reason).inc()
        log.warning(
            "entry moved to the dead-letter stream",
            extra=logs.fields(stream=entry.stream, id=entry.id, reason=reason, deliveries=entry.deliveries),
        )


class Deduplicator:
    """Runs a handler once per event: ``consumer.run(Deduplicator(client, group="mail").wrap(handle), stop)``.

    Each event has a mark under ``consumer:<group>:seen:`` (``EventKey``), set with ``SET NX GET EX``: ``pending``
    from the first attempt, ``done`` once the handler returned. A copy of a ``done`` event (another entry ID, or the
    same entry delivered again) is acknowledged without calling the handler; anything else runs it, so retries and
    replays of a failed event do. The mark lives in the same Redis: what a failover loses with an entry it loses with
    the mark (README "Consumers: the job queue"). Only ``SET`` is needed, the ``event-consumer`` user's one command on
    its keys.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        group: str,
        ttl_seconds: int = DEFAULT_DEDUP_TTL_SECONDS,
        metrics: ConsumerMetrics | None = None,
    ) -> None:
        self.client = client
        self.group = group
        self.ttl_seconds = ttl_seconds
        self.metrics = metrics or shared_metrics()

    def key(self, event: EventKey) -> str:
        return f"{KEY_PREFIX}{self.group}:seen:" + ":".join(event)

    def wrap(self, handler: Handler) -> Handler:
        def deduplicated(entry: StreamEntry) -> None:
            event = entry.event_key
            if event is None:  # not an event of the bridge's: nothing to tell copies apart by
                handler(entry)
                return
            key, where = self.key(event), f"{entry.stream} {entry.id}"
            before = self.client.set(key, f"{_PENDING} {where}", nx=True, get=True, ex=self.ttl_seconds)
            if before is not None and _text(before).startswith(f"{_DONE} "):
                self.metrics.duplicates.labels(self.group).inc()
                log.info(
                    "duplicate event acknowledged",
                    extra=logs.fields(stream=entry.stream, id=entry.id, handled_as=_text(before)[len(_DONE) + 1 :]),
                )
                return
            handler(entry)
            self.client.set(key, f"{_DONE} {where}", ex=self.ttl_seconds)

        return deduplicated


@dataclass(frozen=True)
class Replayed:
    dead_letter_id: str
    stream: str
    new_id: str


@dataclass(frozen=True)
class Skipped:
    dead_letter_id: str
    why: str


def replay_dead_letter(
    client: redis.Redis, streams: Streams, ids: Iterable[str] = (), *, reason: str | None = None
) -> tuple[list[Replayed], list[Skipped]]:
    """Put dead-lettered entries back on the stream they came from (all of them, or ``ids``; optionally only those
    with ``reason``). Returns what was replayed and what was skipped: entries the bridge dead-lettered (unusable
    events) name no stream to go back to, and ``trimmed`` ones hold no event."""
    wanted = list(ids)
    entries: list[tuple[str, dict[str, str]]] = []
    for low, high in [(i, i) for i in wanted] or [("-", "+")]:
        entries += cast(list[tuple[str, dict[str, str]]], client.xrange(streams.dead_letter, min=low, max=high))
    replayed: list[Replayed] = []
    skipped: list[Skipped] = []
    valid_streams = set(streams.by_priority())
    for entry_id, fields in entries:
        target = fields.get("dead_letter.stream")
        if reason is not None and fields.get("dead_letter.reason") != reason:
            continue
        event = {name: value for name, value in fields.items() if not name.startswith(DEAD_LETTER_PREFIX)}
        if target is None or target not in valid_streams:
            skipped.append(Skipped(entry_id, "dead-lettered by the bridge: no stream to return to"))
            continue
        if not event:
            skipped.append(Skipped(entry_id, "trimmed from the stream: no event to put back"))
            continue
        args: list[str] = [entry_id]
        for name, value in event.items():
            args += (name, value)
        new_id = client.eval(_REPLAY_SCRIPT, 2, target, streams.dead_letter, *args)
        replayed.append(Replayed(entry_id, target, _text(new_id)))
    return replayed, skipped


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(flat: Sequence[Any]) -> dict[str, str]:
    """A stream entry's fields as a script returns them: name, value, name, value..."""
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}


def _decoded(fields: dict[Any, Any]) -> dict[str, str]:
    return {_text(name): _text(value) for name, value in fields.items()}
