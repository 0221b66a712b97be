"""The bridge's side of Redis (the events DB): the write script, the cursor, the lease, and the connection.

Keys (all in the events DB, all named after the instance):

- ``relay:{instance}:cursor`` — the ``since`` of the next read (microseconds since the epoch), never moved back;
- ``relay:{instance}:lease`` — which bridge is active; it expires when its holder stops renewing it;
- ``relay:seen:{instance}:{aggregateType}:{aggregateID}:{sequence}`` — one per event written, with a TTL longer
  than the look-back, so a replay (a restart, a failover, the look-back) writes nothing twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from relay.settings import RedisSettings, read_secret_file

#: SET NX the dedup key and, only if it is new, XADD the entry: one atomic step per event, replicated as one.
#: KEYS: dedup key, stream. ARGV: dedup TTL (ms), MAXLEN ~ of the stream, the entry's field/value pairs as one JSON
#: array (one argument instead of twenty: packing arguments is most of the client's cost per event).
WRITE_SCRIPT: Final = """
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(cjson.decode(ARGV[3])))
  return 1
end
return 0
"""
#: Store the cursor only forward: a slower second bridge can never move it back.
CURSOR_SCRIPT: Final = """
local current = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
"""
#: Take the lease if it is free, renew it if we hold it.
LEASE_SCRIPT: Final = """
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


def seen_key(dedup_id: str) -> str:
    return f"relay:seen:{dedup_id}"


class NotAcknowledged(redis.RedisError):
    """No replica acknowledged the page in time (``WAIT 1``): the cursor must not advance."""


@dataclass(frozen=True)
class Item:
    """One entry to write: its dedup key, its stream and its fields (packed once: ``pack_fields``)."""

    key: str
    stream: str
    packed: str

    @staticmethod
    def of(key: str, stream: str, fields: dict[str, str]) -> Item:
        return Item(key, stream, pack_fields(fields))


def pack_fields(fields: dict[str, str]) -> str:
    """An entry's field/value pairs as the write script takes them: one JSON array."""
    return json.dumps([part for pair in fields.items() for part in pair], ensure_ascii=False, separators=(",", ":"))


@dataclass
class WriteResult:
    #: Per item: True if written, False if its dedup key existed (a duplicate).
    written: list[bool] = field(default_factory=list)


def _resp(*args: str) -> bytes:
    """One command in Redis's protocol (RESP), encoded once: cheaper than the client's general encoder."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def connect(settings: RedisSettings) -> redis.Redis:
    """The master of the Sentinel set, in the events DB; redis-py asks the sentinels again after a failover."""
    password = read_secret_file(settings.password_file)
    sentinel = Sentinel(
        list(settings.sentinels),
        socket_timeout=settings.socket_timeout,
        sentinel_kwargs={"password": password, "socket_timeout": settings.socket_timeout},
    )
    client: redis.Redis = sentinel.master_for(
        settings.master_set,
        db=settings.db,
        password=password,
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
        dedup_ttl_ms: int,
        max_stream_length: int,
        batch_size: int,
        require_replica_ack: bool,
        replica_ack_timeout_ms: int,
    ) -> None:
        self.client = client
        self.instance = instance
        self.dedup_ttl_ms = dedup_ttl_ms
        self.max_stream_length = max_stream_length
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
        """Write ``items`` (pipelined, ``batch_size`` per round trip), then the cursor, then wait for a replica.

        Safe to repeat after any failure: every item is deduplicated. Raises ``NotAcknowledged`` when
        ``require_replica_ack`` and no replica confirmed in time; the caller must not advance past this page.
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
        ttl, maxlen = str(self.dedup_ttl_ms), str(self.max_stream_length)
        commands = [_resp("EVALSHA", sha, "2", item.key, item.stream, ttl, maxlen, item.packed) for item in items]
        if cursor is not None:
            commands.append(_resp("EVALSHA", self._sha(CURSOR_SCRIPT), "1", cursor_key(self.instance), str(cursor)))
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
                    replies.append(conn.read_response())
                unread = len(batch)
            for _ in range(unread):
                replies.append(conn.read_response())
        except BaseException:
            # Replies may be left unread on the socket: never reuse it.
            conn.disconnect()
            raise
        finally:
            pool.release(conn)
        errors = [r for r in replies if isinstance(r, redis.ResponseError)]
        if errors:
            raise errors[0]
        result = WriteResult(written=[bool(r) for r in replies[: len(items)]])
        if wait and int(str(replies[-1])) < 1:
            timeout = self.replica_ack_timeout_ms
            raise NotAcknowledged(f"no replica acknowledged {len(items)} entries within {timeout} ms")
        return result

    # --- cursor and lease -------------------------------------------------------------------------------------------

    def cursor(self) -> int | None:
        value = self.client.get(cursor_key(self.instance))
        return None if value is None else int(value)

    def hold_lease(self, holder: str, ttl_ms: int) -> bool:
        """Take or renew the lease; False while another bridge holds it."""
        return bool(self.client.eval(LEASE_SCRIPT, 1, lease_key(self.instance), holder, str(ttl_ms)))

    def release_lease(self, holder: str) -> None:
        self.client.eval(RELEASE_SCRIPT, 1, lease_key(self.instance), holder)
