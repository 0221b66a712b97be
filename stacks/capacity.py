"""The capacity model of the one Redis: what each workload may hold of ``maxmemory``, and the measurements behind it.

Three workloads share each Redis (README, "Capacity: one Redis, three workloads"). The edge's rate-limit counters
(DB 0) and ZITADEL's cache objects carry a TTL, and ``volatile-lru`` evicts them. The events' data in DB 1 — the
three priority streams, the dead-letter stream and the relay's dedup records — carries none and is never evicted, so
the program bounds it: each part gets a share of maxmemory (``events.capacity``) and a cap derived from that share;
the reserve is what the evictable keys, and Redis's own memory, can count on.

The measured figures below are ``used_memory`` differences on a real redis-server (7.0.15, jemalloc 5.3.0, the
default ``stream-node-max-bytes 4096`` / ``stream-node-max-entries 100``) on a 2-core machine, 30,000 of each written
the way production writes them (2026-12-05). ``./bin/benchmark-capacity`` measures them again (``measure`` in
``benchmarks/capacity.py``) and prints them beside these; they move by a few bytes between runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# --- measured ------------------------------------------------------------------------------------------------------

#: A ``user.human.added`` entry with a registration's profile (user name, names, language, e-mail; 18-digit IDs),
#: through the relay's own write script (``relay/store.py``): the largest common entry.
MEASURED_ENTRY_BYTES: Final = 359
#: The benchmark's mix: two event types per priority stream (logins and tokens, registrations and profile changes,
#: sessions and domains).
MEASURED_MIX_ENTRY_BYTES: Final = 204
#: A consumer's dead letter of that ``user.human.added`` entry: its fields plus ``dead_letter.*`` with a 100-character
#: error (``relay/consumer.py``).
MEASURED_DEAD_LETTER_ENTRY_BYTES: Final = 516
#: One dedup record: a field ``aggregateType:aggregateID:sequence`` (18-digit ID) in its 10-minute bucket's hash.
MEASURED_DEDUP_RECORD_BYTES: Final = 80
#: One rate-limit counter of the per-client-IP rule for a whole IPv6 address (IPv4: 292), with its TTL, as
#: ``testbed/ratelimit.py`` writes envoyproxy/ratelimit's keys.
MEASURED_COUNTER_BYTES: Final = 316
#: ``used_memory`` of an empty server (the stack's ACL users loaded): part of the reserve.
MEASURED_EMPTY_SERVER_BYTES: Final = 1_167_448

# --- budgeted (the measured figures with a margin; ``events.capacity``'s defaults) ---------------------------------

#: The ``user.human.added`` entry with a margin of 43 % (the mix: 2.5 times).
ENTRY_BYTES: Final = 512
#: Twice a consumer's dead letter of the largest common entry (the bridge's own dead letters take 159 B).
DEAD_LETTER_ENTRY_BYTES: Final = 1024
#: 1.6 times the measured record.
DEDUP_RECORD_BYTES: Final = 128

#: ``high``, ``normal``, ``low``: each gets a third of the streams' share.
PRIORITY_STREAMS: Final = 3
#: The creation-date span of one dedup bucket (``relay/store.py``, ``SEEN_BUCKET_US``; a test ties the two). The
#: relay deletes whole buckets once the cursor enters a new one, so it holds up to ``dedupTtl`` plus two of them.
DEDUP_BUCKET_SECONDS: Final = 600


def share_bytes(maxmemory: int, percent: int) -> int:
    return maxmemory * percent // 100


def stream_cap(maxmemory: int, streams_percent: int, entry_bytes: int) -> int:
    """Entries per priority stream: a third of the streams' share at the budgeted entry size, rounded down."""
    return maxmemory * streams_percent // (100 * PRIORITY_STREAMS * entry_bytes)


def dead_letter_cap(maxmemory: int, dead_letter_percent: int, entry_bytes: int) -> int:
    """Entries of the dead-letter stream: its share at the budgeted dead-letter entry size, rounded down."""
    return maxmemory * dead_letter_percent // (100 * entry_bytes)


def dedup_window_seconds(dedup_ttl_seconds: float) -> float:
    """The creation-date span of the dedup records the relay holds at most: ``dedupTtl`` and two buckets."""
    return dedup_ttl_seconds + 2 * DEDUP_BUCKET_SECONDS


def dedup_rate_limit(maxmemory: int, dedup_percent: int, record_bytes: int, dedup_ttl_seconds: float) -> int:
    """The highest sustained event rate (per second, rounded down) whose dedup records fit the dedup share."""
    window = dedup_window_seconds(dedup_ttl_seconds)
    return int(share_bytes(maxmemory, dedup_percent) // (window * record_bytes))


@dataclass(frozen=True)
class StreamCaps:
    """``MAXLEN ~`` of each priority stream and of the dead-letter stream (relay.json ``publishing``)."""

    max_stream_length: int
    dead_letter_max_length: int
