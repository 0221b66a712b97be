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
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, cast

import redis

from relay import logs
from relay.settings import Streams

log = logging.getLogger("relay.consumer")

DEAD_LETTER_PREFIX: Final = "dead_letter."
#: XADD the entry (with its dead-letter fields) to the dead-letter stream and XACK it, in one step.
#: KEYS: dead-letter stream, source stream. ARGV: group, entry ID, then the field/value pairs.
_DEAD_LETTER_SCRIPT: Final = """
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
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


Handler = Callable[[StreamEntry], None]


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
    ) -> None:
        self.client = client
        self.group = group
        self.name = name
        self.streams = streams
        self.max_deliveries = max(1, max_deliveries)
        self.claim_idle_ms = claim_idle_ms
        self.batch = batch
        self.block_ms = block_ms

    def ensure_groups(self, start_id: str = "0") -> None:
        """Create the group on each stream (and the stream), reading from ``start_id`` (``0``: all history)."""
        for stream in self.streams.by_priority():
            try:
                self.client.xgroup_create(stream, self.group, id=start_id, mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def run(self, handler: Handler, stop: threading.Event) -> None:
        while not stop.is_set():
            self.run_once(handler)

    def run_once(self, handler: Handler, block: bool = True) -> int:
        """One turn: stale entries first, then the most urgent stream that has new entries. Returns how many."""
        handled = self._claim_stale(handler)
        if handled:
            return handled
        for stream in self.streams.by_priority():
            got = self.client.xreadgroup(self.group, self.name, {stream: ">"}, count=self.batch)
            if got:
                return self._handle_all(got, handler)
        if not block:
            return 0
        # Nothing anywhere: wait for the next entry on any stream.
        got = self.client.xreadgroup(
            self.group, self.name, dict.fromkeys(self.streams.by_priority(), ">"), count=self.batch, block=self.block_ms
        )
        return self._handle_all(got or [], handler)

    def _handle_all(self, got: Iterable[Any], handler: Handler) -> int:
        by_stream = {_text(stream): entries for stream, entries in got}
        count = 0
        for stream in self.streams.by_priority():  # a blocking read can return several streams: urgent first
            for entry_id, fields in by_stream.get(stream, []):
                self._handle(StreamEntry(stream, entry_id, fields, 1), handler)
                count += 1
        return count

    def _claim_stale(self, handler: Handler) -> int:
        for stream in self.streams.by_priority():
            reply = self.client.xautoclaim(
                stream, self.group, self.name, min_idle_time=self.claim_idle_ms, start_id="0-0", count=self.batch
            )
            claimed = [(entry_id, fields) for entry_id, fields in reply[1] if fields is not None]
            if not claimed:
                continue
            pending = self.client.xpending_range(
                stream, self.group, min=claimed[0][0], max=claimed[-1][0], count=len(claimed), consumername=self.name
            )
            deliveries = {_text(p["message_id"]): int(p["times_delivered"]) for p in pending}
            for entry_id, fields in claimed:
                self._handle(StreamEntry(stream, entry_id, fields, deliveries.get(entry_id, 1)), handler)
            return len(claimed)
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
                    extra=logs.fields(stream=entry.stream, id=entry.id, deliveries=entry.deliveries),
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
        args: list[str] = [self.group, entry.id]
        for name, value in fields.items():
            args += (name, value)
        self.client.eval(_DEAD_LETTER_SCRIPT, 2, self.streams.dead_letter, entry.stream, *args)
        log.warning(
            "entry moved to the dead-letter stream",
            extra=logs.fields(stream=entry.stream, id=entry.id, reason=reason, deliveries=entry.deliveries),
        )


@dataclass(frozen=True)
class Replayed:
    dead_letter_id: str
    stream: str
    new_id: str


def replay_dead_letter(
    client: redis.Redis, streams: Streams, ids: Iterable[str] = (), *, reason: str | None = None
) -> tuple[list[Replayed], list[str]]:
    """Put dead-lettered entries back on the stream they came from (all of them, or ``ids``; optionally only those
    with ``reason``). Returns what was replayed and the IDs skipped: entries the bridge dead-lettered (unusable
    events) name no stream to go back to."""
    wanted = list(ids)
    entries: list[tuple[str, dict[str, str]]] = []
    for low, high in [(i, i) for i in wanted] or [("-", "+")]:
        entries += cast(list[tuple[str, dict[str, str]]], client.xrange(streams.dead_letter, min=low, max=high))
    replayed: list[Replayed] = []
    skipped: list[str] = []
    valid_streams = set(streams.by_priority())
    for entry_id, fields in entries:
        target = fields.get("dead_letter.stream")
        if reason is not None and fields.get("dead_letter.reason") != reason:
            continue
        if target is None or target not in valid_streams:
            skipped.append(entry_id)
            continue
        args: list[str] = [entry_id]
        for name, value in fields.items():
            if not name.startswith(DEAD_LETTER_PREFIX):
                args += (name, value)
        new_id = client.eval(_REPLAY_SCRIPT, 2, target, streams.dead_letter, *args)
        replayed.append(Replayed(entry_id, target, _text(new_id)))
    return replayed, skipped


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
