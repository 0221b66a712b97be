"""The bridge's side of Redis (the events DB): the write script, the cursor, the lease, and the connection.

Keys (all in the events DB, all named after the instance):

- ``relay:{instance}:cursor`` — the ``since`` of the next read (microseconds since the epoch), never moved back;
- ``relay:{instance}:lease`` — which bridge is active; it expires when its holder stops renewing it;
- ``relay:seen:{instance}:{bucket}`` — a hash of the events written whose creation date falls in one
  ``SEEN_BUCKET_US`` bucket (field ``aggregateType:aggregateID:sequence``), so a replay (a restart, a failover,
  the look-back, a second bridge) writes nothing twice. ``relay:seen:{instance}:undated`` holds the dead letters
  of events without a usable creation date;
- ``relay:{instance}:seen-horizon`` — the oldest bucket still kept: older buckets are deleted by the bridge.

Eviction: Redis runs ``volatile-lru``, which only evicts keys with a TTL. The dedup hashes and the cursor have none,
so memory pressure can never make the bridge write an event twice; the bridge itself deletes the buckets older than
``dedupTtl`` behind the cursor (``prune_seen``). The lease needs an expiry (a dead holder must free it), so it can
be evicted: two bridges may then run at once, which writes no duplicate because the dedup records survive.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import redis
from redis.backoff import NoBackoff
from redis.credentials import CredentialProvider
from redis.retry import Retry
from redis.sentinel import Sentinel

from relay.settings import RedisSettings, read_secret_file

#: Record the event in its bucket (HSETNX) and, only if it is new, XADD the entry: one atomic step per event,
#: replicated as one. An event of a bucket already deleted (older than the horizon) was written long ago: a bridge
#: that lags that far behind writes nothing. KEYS: bucket hash, stream, horizon. ARGV: dedup field, bucket number
#: (-1: undated, never pruned), MAXLEN ~ of the stream, the entry's field/value pairs as one JSON array (one argument
#: instead of twenty: packing arguments is most of the client's cost per event).
WRITE_SCRIPT: Final = """
local bucket = tonumber(ARGV[2])
if bucket >= 0 and bucket < tonumber(redis.call('GET', KEYS[3]) or '-1') then
  return 0
end
if redis.call('HSETNX', KEYS[1], ARGV[1], '1') == 1 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(cjson.decode(ARGV[4])))
  return 1
end
return 0
"""
#: Store a position (the cursor, the dedup horizon) only forward: a slower second bridge can never move it back.
CURSOR_SCRIPT: Final = """
local current = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
"""
#: Take the lease if it is free, renew it if we hold it. ``allow-oom``: the holder keeps its lease while Redis refuses
#: writes for memory, so that its trims (``XTRIM`` is never refused for memory) can free some.
LEASE_SCRIPT: Final = """#!lua flags=allow-oom
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
RELEASE_SCRIPT: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def cursor_key(instance: str) -> str:
    return f"relay:{instance}:cursor"


def lease_key(instance: str) -> str:
    return f"relay:{instance}:lease"


#: The creation-date span of one dedup bucket (10 min): the bridge deletes whole buckets.
SEEN_BUCKET_US: Final = 600_000_000
#: The bucket number of events without a usable creation date (their dead letters).
UNDATED: Final = -1


def seen_bucket(created_us: int | None) -> int:
    return UNDATED if created_us is None else created_us // SEEN_BUCKET_US


def seen_key(instance: str, bucket: int) -> str:
    return f"relay:seen:{instance}:{'undated' if bucket == UNDATED else bucket}"


def seen_horizon_key(instance: str) -> str:
    return f"relay:{instance}:seen-horizon"


#: Error replies with which Redis refuses a write it would take otherwise: out of memory, a read-only replica, too few
#: replicas (``min-replicas-to-write``), a failed disk write (AOF, RDB). The write is not done: retry it, never pass it.
_REFUSALS: Final = {"OOM": "oom", "READONLY": "readonly", "NOREPLICAS": "noreplicas", "MISCONF": "misconf"}


def write_refusal(exc: BaseException) -> str | None:
    """Why Redis refused a write (``oom``, ``readonly``, ``noreplicas``, ``misconf``), or None for other failures."""
    if not isinstance(exc, redis.ResponseError):
        return None
    # redis-py strips the code of the replies it has a class for (OOM, READONLY), and keeps it in status_code.
    code = getattr(exc, "status_code", None) or str(exc).split(" ", 1)[0]
    return _REFUSALS.get(code)


class NotAcknowledged(redis.RedisError):
    """No replica acknowledged the page in time (``WAIT 1``): the cursor must not advance."""


@dataclass(frozen=True)
class Item:
    """One entry to write: its dedup field and bucket (``seen_bucket``), its stream and its fields (packed once:
    ``pack_fields``)."""

    dedup: str
    bucket: int
    stream: str
    packed: str

    @staticmethod
    def of(dedup: str, bucket: int, stream: str, fields: dict[str, str]) -> Item:
        return Item(dedup, bucket, stream, pack_fields(fields))


def pack_fields(fields: dict[str, str]) -> str:
    """An entry's field/value pairs as the write script takes them: one JSON array."""
    return json.dumps([part for pair in fields.items() for part in pair], ensure_ascii=False, separators=(",", ":"))


@dataclass
class WriteResult:
    #: Per item: True if written, False if its dedup key existed (a duplicate).
    written: list[bool] = field(default_factory=list)


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def _resp(*args: str) -> bytes:
    """One command in Redis's protocol (RESP), encoded once: cheaper than the client's general encoder."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class AclCredentials(CredentialProvider):
    """``AUTH username password`` for Redis and the sentinels, the password read from the file the Vault agent
    renders on every (re)connect: a rotated password reaches the bridge with its next connection, without a
    restart."""

    def __init__(self, username: str, password_file: str) -> None:
        self.username = username
        self.password_file = password_file

    def get_credentials(self) -> tuple[str, str]:
        return (self.username, read_secret_file(self.password_file))


def connect(settings: RedisSettings) -> redis.Redis:
    """The master of the Sentinel set, in the events DB; redis-py asks the sentinels again after a failover."""
    credentials = AclCredentials(settings.username, settings.password_file)
    sentinel = Sentinel(
        list(settings.sentinels),
        sentinel_kwargs={
            "credential_provider": credentials,
            "socket_timeout": settings.socket_timeout,
            "socket_connect_timeout": settings.socket_timeout,
            # One attempt per sentinel per discovery. redis-py's default (10 retries with backoff) keeps asking a
            # sentinel that does not answer for about 11 socket timeouts before it asks the next one; the bridge's
            # loop already retries the whole discovery with its backoff.
            "retry": Retry(NoBackoff(), 0),
        },
    )
    client: redis.Redis = sentinel.master_for(
        settings.master_set,
        db=settings.db,
        credential_provider=credentials,
        socket_timeout=settings.socket_timeout,
        socket_connect_timeout=settings.socket_timeout,
        decode_responses=True,
        # The bridge's own loop retries with backoff; a hidden retry here would only delay what it sees.
        retry=Retry(NoBackoff(), 0),
    )
    return client


class Store:
    def __init__(
        self,
        client: redis.Redis,
        instance: str,
        *,
        dedup_keep_us: int,
        max_stream_length: int,
        batch_size: int,
        require_replica_ack: bool,
        replica_ack_timeout_ms: int,
        dead_letter_cap: tuple[str, int] | None = None,
    ) -> None:
        self.client = client
        self.instance = instance
        #: How far behind the cursor (in creation date) the dedup records are kept.
        self.dedup_keep_us = dedup_keep_us
        #: ``MAXLEN ~`` of every stream, but the dead-letter stream's own (``dead_letter_cap``: its name and cap).
        self.max_stream_length = max_stream_length
        self.dead_letter_cap = dead_letter_cap
        self.batch_size = batch_size
        self.require_replica_ack = require_replica_ack
        self.replica_ack_timeout_ms = replica_ack_timeout_ms
        self._shas: dict[str, str] = {}

    def _sha(self, script: str) -> str:
        if script not in self._shas:
            self._shas[script] = str(self.client.script_load(script))
        return self._shas[script]

    def _reload(self) -> None:
        self._shas.clear()

    # --- the write path ---------------------------------------------------------------------------------------------

    def write(self, items: Sequence[Item], cursor: int | None = None) -> WriteResult:
        """Write ``items`` (pipelined, ``batch_size`` per round trip), wait for a replica, then store the cursor.

        Safe to repeat after any failure: every item is deduplicated. Raises ``NotAcknowledged`` when
        ``require_replica_ack`` and no replica confirmed in time; the cursor then stays where it was.
        """
        try:
            return self._write(items, cursor)
        except redis.exceptions.NoScriptError:
            # A new master (after a failover) or a SCRIPT FLUSH: load again and write the page again (deduplicated).
            self._reload()
            return self._write(items, cursor)

    def _write(self, items: Sequence[Item], cursor: int | None) -> WriteResult:
        """Stream the page's commands over one connection, ``batch_size`` at a time, reading the replies of a batch
        only after the next one is sent: Redis runs one batch while the next is encoded (a redis-py pipeline waits
        for every reply before it sends more)."""
        sha = self._sha(WRITE_SCRIPT)
        horizon, maxlen = seen_horizon_key(self.instance), str(self.max_stream_length)
        dead_letter, dead_letter_maxlen = self.dead_letter_cap or ("", 0)
        commands = [
            _resp(
                "EVALSHA",
                sha,
                "3",
                seen_key(self.instance, item.bucket),
                item.stream,
                horizon,
                item.dedup,
                str(item.bucket),
                str(dead_letter_maxlen) if item.stream == dead_letter else maxlen,
                item.packed,
            )
            for item in items
        ]
        wait = self.require_replica_ack and bool(items)
        if wait:
            commands.append(_resp("WAIT", "1", str(self.replica_ack_timeout_ms)))
        pool = self.client.connection_pool
        conn = pool.get_connection()
        replies: list[object] = []
        try:
            unread = 0
            for start in range(0, len(commands), self.batch_size):
                batch = commands[start : start + self.batch_size]
                conn.send_packed_command(batch, check_health=False)
                for _ in range(unread):
                    replies.append(conn.read_response())  # an error reply raises here
                unread = len(batch)
            for _ in range(unread):
                replies.append(conn.read_response())
        except BaseException:
            # Replies may be left unread on the socket: never reuse it.
            conn.disconnect()
            raise
        finally:
            pool.release(conn)
        result = WriteResult(written=[bool(r) for r in replies[: len(items)]])
        if wait and int(str(replies[-1])) < 1:
            timeout = self.replica_ack_timeout_ms
            raise NotAcknowledged(f"no replica acknowledged {len(items)} entries within {timeout} ms")
        if cursor is not None:
            # Only now, with the page on a replica: a cursor sent with the page would sit on the master even when no
            # replica took the page, and a failover to that replica would lose the page behind the cursor. No second
            # WAIT: a cursor lost in a failover only makes the next bridge read the acknowledged page again, and the
            # page's dedup records (acknowledged with it) turn that read into duplicates skipped.
            self.client.evalsha(self._sha(CURSOR_SCRIPT), 1, cursor_key(self.instance), str(cursor))
        return result

    def trim(self, caps: dict[str, int], min_id_ms: int) -> dict[tuple[str, str], int]:
        """Drop each stream's entries older than ``min_id_ms`` (entry IDs are Redis's clock in milliseconds), then
        those beyond its cap; both approximately (``~``: whole nodes only, cheap). Returns the entries dropped per
        ``(stream, "age" | "length")``. Redis drops at most 10,000 entries per call (``~``'s default limit): call
        again until nothing is left."""
        dropped: dict[tuple[str, str], int] = {}
        for stream, cap in caps.items():
            dropped[(stream, "age")] = self._trim_all(stream, minid=f"{min_id_ms}-0")
            dropped[(stream, "length")] = self._trim_all(stream, maxlen=cap)
        return dropped

    def _trim_all(self, stream: str, *, maxlen: int | None = None, minid: str | None = None) -> int:
        total = 0
        while count := int(self.client.xtrim(stream, maxlen=maxlen, minid=minid, approximate=True)):
            total += count
        return total

    def prune_seen(self) -> int:
        """Delete the dedup buckets older than ``dedup_keep_us`` behind the stored cursor; the number deleted.

        The horizon moves first, so a lagging bridge that meets an event of a deleted bucket skips it instead of
        writing it again (such an event lies far behind the cursor: it was written and acknowledged long ago).
        """
        stored = self.cursor()
        if stored is None:
            return 0
        horizon = seen_bucket(max(0, stored - self.dedup_keep_us))
        self.client.eval(CURSOR_SCRIPT, 1, seen_horizon_key(self.instance), str(horizon))
        prefix = seen_key(self.instance, 0)[:-1]
        stale = []
        for key in self.client.scan_iter(match=_glob_escape(prefix) + "*", count=1000):
            bucket = str(key)[len(prefix) :]
            if bucket.isdigit() and int(bucket) < horizon:
                stale.append(key)
        if stale:
            self.client.unlink(*stale)
        return len(stale)

    # --- cursor and lease -------------------------------------------------------------------------------------------

    def cursor(self) -> int | None:
        value = self.client.get(cursor_key(self.instance))
        return None if value is None else int(value)

    def hold_lease(self, holder: str, ttl_ms: int) -> bool:
        """Take or renew the lease; False while another bridge holds it."""
        return bool(self.client.eval(LEASE_SCRIPT, 1, lease_key(self.instance), holder, str(ttl_ms)))

    def release_lease(self, holder: str) -> None:
        self.client.eval(RELEASE_SCRIPT, 1, lease_key(self.instance), holder)
