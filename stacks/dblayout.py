"""The Redis database layout: which logical DB holds what. The one owner of these numbers.

ZITADEL picks each cache's DB as ``DBOffset + purpose`` and truncates a cache with ``FLUSHDB``
(``internal/cache/connector/connector.go``, ``internal/cache/cache.go``), so the whole block
``DBOffset+1 .. DBOffset+7`` belongs to ZITADEL and must never contain the events DB.

DB 0 holds the edge's rate-limit counters: envoyproxy/ratelimit in Sentinel mode cannot select a DB (it never sends
``SELECT`` to the master it discovers), so its keys land in DB 0 whatever the layout says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: ZITADEL's cache purposes (``cache.Purpose``, an iota starting at Unspecified = 0).
ZITADEL_CACHE_PURPOSES: Final[dict[str, int]] = {
    "Instance": 1,
    "Milestones": 2,
    "Organization": 3,
    "IdPFormCallbacks": 4,
    "FederatedLogouts": 5,
    "WebkeyActiveSigningKey": 6,
    "WebkeyPublicKeys": 7,
}
#: The caches every stack puts on Redis (``Caches.<name>.Connector: redis``).
REDIS_CACHES: Final = ("Instance", "Milestones", "Organization")
#: The caches that carry login state across replicas: on Postgres (ZITADEL's default) or Redis, per stack.
SESSION_CACHES: Final = ("IdPFormCallbacks", "FederatedLogouts")

#: Where envoyproxy/ratelimit's counters live: fixed, not configurable (Sentinel mode cannot select a DB).
RATE_LIMIT_DB: Final = 0
DEFAULT_EVENTS_DB: Final = 1
DEFAULT_CACHE_DB_OFFSET: Final = 2
#: Redis's own default, which the Bitnami chart keeps.
DEFAULT_DATABASES: Final = 16


@dataclass(frozen=True)
class DbLayout:
    events_db: int
    cache_db_offset: int
    databases: int
    #: The caches on Redis; each uses DB ``cache_db_offset + purpose``.
    redis_caches: tuple[str, ...] = REDIS_CACHES
    rate_limit_db: int = RATE_LIMIT_DB

    @property
    def cache_block(self) -> range:
        """Every DB ZITADEL may address (and FLUSHDB), whether or not a cache is on Redis today."""
        return range(self.cache_db_offset + 1, self.cache_db_offset + max(ZITADEL_CACHE_PURPOSES.values()) + 1)

    @property
    def cache_dbs(self) -> dict[str, int]:
        """The DB of each cache this program puts on Redis."""
        return {name: self.cache_db_offset + ZITADEL_CACHE_PURPOSES[name] for name in self.redis_caches}

    def violations(self) -> list[tuple[str, str]]:
        """Broken rules as ``(config key, rule)`` pairs; empty when the layout is sound."""
        found: list[tuple[str, str]] = []
        block = self.cache_block
        if self.events_db in block:
            found.append(
                (
                    "events.db",
                    f"events DB {self.events_db} lies inside ZITADEL's cache block {block.start}..{block.stop - 1} "
                    f"(zitadel.cache.dbOffset {self.cache_db_offset} + 1..7), where ZITADEL runs FLUSHDB",
                )
            )
        if self.events_db == self.rate_limit_db:
            found.append(
                (
                    "events.db",
                    f"events DB {self.events_db} holds the edge's rate-limit counters (Sentinel-mode ratelimit "
                    "cannot select another DB)",
                )
            )
        if self.rate_limit_db in block:
            found.append(
                (
                    "zitadel.cache.dbOffset",
                    f"ZITADEL's cache block {block.start}..{block.stop - 1} contains the rate-limit DB "
                    f"{self.rate_limit_db}, where ZITADEL runs FLUSHDB",
                )
            )
        if self.events_db >= self.databases:
            found.append(("events.db", f"events DB {self.events_db} must be < redis.databases ({self.databases})"))
        if block.stop - 1 >= self.databases:
            found.append(
                (
                    "zitadel.cache.dbOffset",
                    f"ZITADEL's cache block {block.start}..{block.stop - 1} needs DB indices < redis.databases "
                    f"({self.databases})",
                )
            )
        return found

    def as_output(self) -> dict[str, object]:
        return {
            "databases": self.databases,
            "rateLimitDb": self.rate_limit_db,
            "eventsDb": self.events_db,
            "cacheDbOffset": self.cache_db_offset,
            "cacheBlock": [self.cache_block.start, self.cache_block.stop - 1],
            "cacheDbs": self.cache_dbs,
        }
