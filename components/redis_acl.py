"""The Redis ACL users: one per client, each allowed exactly the commands and keys of its job (README "Redis users").

Redis cannot confine a user to a DB number, only to commands and key patterns, so every client's keys carry a
prefix of their own (streams ``zitadel:events:*``, the bridge's ``relay:*``, the consumers' ``consumer:*``, the
counters' ``rl:*``). redis-server loads the users from an ``aclfile`` that the Redis pods' Vault agent renders from
the SHA-256 of each password (the pods never read a client's password); the sentinels load the users that find the
master through them (discovery commands only) from a file their configuration ``include``s. ``default`` stays the
chart's own user (replication, the sentinels' monitoring and failover, the probes), with the password only the
Redis pods read.

The Helm values and agent templates (``components/redis.py``), the test bed that starts real processes
(``testbed/redisbed.py``) and the README table all read this module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from stacks import names

#: What every client needs to open a connection the way its library does: AUTH (with a user name), HELLO (RESP3
#: and AUTH in one; Redis never refuses these two), PING, CLIENT SETNAME, SELECT (ZITADEL and the relay address a
#: DB by number). Not CLIENT SETINFO nor go-redis's CLIENT MAINT_NOTIFICATIONS: their clients carry on when refused,
#: and Redis 7.0 does not know them (an ACL file naming an unknown command stops redis-server from starting: every
#: command here exists in 7.0, the test bed's, and in the deployed 8.2).
_CONNECTION: Final = ("+auth", "+hello", "+ping", "+select", "+client|setname", "+client|id")
#: ZITADEL's cache keys (v4.13.0 ``internal/cache/connector/redis``): object hashes named by a UUID, their key sets
#: ``<uuid>-keys``, and indexes ``<build version>:<index>:<key>`` (``v4.13.0:…``; a build without a version uses its
#: date). None of the other clients' prefixes matches these.
_UUID: Final = "????????-????-????-????-????????????"
ZITADEL_KEY_PATTERNS: Final = (_UUID, f"{_UUID}-keys", "v[0-9]*:*", "[0-9]*:*")
#: The only commands a client may send to a sentinel: find the master and the replicas, and follow a failover.
SENTINEL_DISCOVERY_COMMANDS: Final = (
    "+auth",
    "+hello",
    "+ping",
    "+client|setname",
    "+sentinel|get-master-addr-by-name",
    "+sentinel|master",
    "+sentinel|masters",
    "+sentinel|replicas",
    "+sentinel|slaves",
    "+sentinel|sentinels",
    "+subscribe",
    "+unsubscribe",
)
#: The sentinels' channel that announces a new master, and the name radix (envoyproxy/ratelimit's client) subscribes
#: to (without the ``+``, so it never hears one and polls instead; refused, it would retry the subscription forever).
SENTINEL_CHANNELS: Final = ("+switch-master", "switch-master")


def _glob_escape(text: str) -> str:
    """A key name as an ACL pattern matching only itself."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


@dataclass(frozen=True)
class RedisUser:
    name: str
    #: What it is for (the README table).
    purpose: str
    #: Key patterns (Redis glob) the user may touch; empty: none.
    keys: tuple[str, ...]
    #: ``+command``, ``+command|subcommand`` or ``+@category``, applied after ``-@all``.
    commands: tuple[str, ...]
    #: Pub/Sub channel patterns; empty: none.
    channels: tuple[str, ...] = ()
    #: Finds the master through the sentinels: also a Sentinel user, with ``SENTINEL_DISCOVERY_COMMANDS`` only.
    sentinel: bool = False
    #: Narrower grants beside the main rules (Redis 7 selectors): ``(keys, commands)``, e.g. deleting only the
    #: user's own keys. A command passes when the main rules or one selector allow it with every key it names.
    selectors: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = ()

    def rules(self) -> str:
        """The user's ACL rules after its password: everything it may do, nothing inherited."""
        return " ".join(
            [
                "resetkeys",
                *(f"~{pattern}" for pattern in self.keys),
                "resetchannels",
                *(f"&{pattern}" for pattern in self.channels),
                "-@all",
                *self.commands,
                "clearselectors",
                *(
                    "(" + " ".join([*(f"~{pattern}" for pattern in keys), *commands]) + ")"
                    for keys, commands in self.selectors
                ),
            ]
        )


def sentinel_rules() -> str:
    channels = [f"&{channel}" for channel in SENTINEL_CHANNELS]
    return " ".join(["resetkeys", "resetchannels", *channels, "-@all", *SENTINEL_DISCOVERY_COMMANDS])


#: The chart's own user: replication (PSYNC), the sentinels (INFO, ROLE, REPLICAOF, CONFIG REWRITE, CLIENT KILL,
#: their hello channel), the chart's probes and scripts. Only the Redis pods hold its password.
DEFAULT_USER: Final = RedisUser(
    names.REDIS_DEFAULT_USER,
    "the chart itself: replication, the sentinels, probes and start scripts (only the Redis pods hold it)",
    keys=("*",),
    channels=("*",),
    commands=("+@all",),
)


def client_users(streams: Sequence[str], rate_limit_key_prefix: str) -> tuple[RedisUser, ...]:
    """Every client's user. ``streams``: the event streams, the dead letter last; ``rate_limit_key_prefix``: the
    edge's ``CACHE_KEY_PREFIX``."""
    stream_keys = tuple(_glob_escape(stream) for stream in streams)
    return (
        RedisUser(
            names.REDIS_ZITADEL_USER,
            "ZITADEL's cache connector: its objects and indexes through its Lua scripts, FLUSHDB of its cache DBs",
            keys=ZITADEL_KEY_PATTERNS,
            # EVALSHA (EVAL when the script is not loaded) and what its get/set/invalidate scripts call; DEL and
            # FLUSHDB (its Truncate) outside them.
            commands=(
                *_CONNECTION,
                "+evalsha",
                "+eval",
                "+get",
                "+set",
                "+hset",
                "+hget",
                "+sadd",
                "+smembers",
                "+expire",
                "+time",
                "+del",
                "+unlink",
                "+flushdb",
            ),
        ),
        RedisUser(
            names.REDIS_RELAY_USER,
            "the event bridge: the streams (XADD through its script, XTRIM), its cursor, lease and dedup records",
            keys=(*stream_keys, f"{names.RELAY_KEY_PREFIX}*"),
            commands=(
                *_CONNECTION,
                "+evalsha",
                "+eval",
                "+script|load",
                "+get",
                "+set",
                "+hsetnx",
                "+xadd",
                "+xtrim",
                "+xlen",
                "+scan",
                "+wait",
                "+info",
                # The operators' ``python -m relay tail`` and ``replay-dead-letter`` in a relay pod.
                "+xrange",
                "+xrevrange",
                "+xread",
            ),
            # Deleting only its own keys (the lease, old dedup buckets), never a stream; replay takes an entry off
            # the dead letter.
            selectors=(
                ((f"{names.RELAY_KEY_PREFIX}*",), ("+del", "+unlink")),
                ((stream_keys[-1],), ("+xdel",)),
            ),
            sentinel=True,
        ),
        RedisUser(
            names.REDIS_RATE_LIMIT_USER,
            "envoyproxy/ratelimit: fixed-window counters (INCRBY, EXPIRE), no scripting",
            keys=(f"{_glob_escape(rate_limit_key_prefix)}*",),
            commands=(*_CONNECTION, "+incrby", "+expire"),
            sentinel=True,
        ),
        RedisUser(
            names.REDIS_EXPORTER_USER,
            "the Prometheus exporter: INFO-class reads, and XINFO of the streams (consumer-group lag)",
            keys=(),
            # Not CONFIG GET: ``CONFIG GET *`` answers ``masterauth``, the chart's own password, in clear text.
            commands=(*_CONNECTION, "+info", "+slowlog|get", "+slowlog|len", "+latency|latest", "+latency|histogram"),
            # ``--check-single-streams`` (components/redis.py): each stream's length, groups, their lag and pending
            # entries, from Redis itself, so that a group whose workers are all gone still shows. Exact names, no
            # SCAN (it would list every key). XINFO STREAM also shows entries; only the Redis pods, which hold
            # ``default``'s password too, read this user's.
            selectors=((stream_keys, ("+xinfo|stream", "+xinfo|groups", "+xinfo|consumers")),),
        ),
        RedisUser(
            names.REDIS_CONSUMER_USER,
            "product workers: read and acknowledge their groups, the dead letter, their own dedup records",
            keys=(*stream_keys, f"{names.CONSUMER_KEY_PREFIX}*"),
            commands=(
                *_CONNECTION,
                "+xreadgroup",
                "+xack",
                "+xautoclaim",
                "+xclaim",
                "+xpending",
                "+xgroup|create",
                "+xgroup|setid",
                "+xinfo|stream",
                "+xinfo|groups",
                "+xrange",
                "+xlen",
                "+xadd",
                "+eval",
                "+evalsha",
                "+script|load",
                "+set",
            ),
            # ``replay_dead_letter`` takes an entry off the dead letter; no other stream loses one to a consumer.
            selectors=(((stream_keys[-1],), ("+xdel",)),),
            sentinel=True,
        ),
    )


def acl_lines(users: Sequence[RedisUser], password_hash: Callable[[str], str]) -> str:
    """redis-server's ACL file: ``default`` first, then ``users``; ``password_hash(user)`` is the text after ``#``."""
    return "".join(
        f"user {user.name} on #{password_hash(user.name)} {user.rules()}\n" for user in (DEFAULT_USER, *users)
    )


def sentinel_lines(users: Sequence[RedisUser], password_hash: Callable[[str], str]) -> str:
    """The sentinels' client users (``include``d by sentinel.conf): the same names and passwords, discovery only."""
    return "".join(
        f"user {user.name} on #{password_hash(user.name)} {sentinel_rules()}\n" for user in users if user.sentinel
    )


def password_sha256(password: str) -> str:
    """What an ACL rule ``#<hash>`` holds: the SHA-256 of the password, lower-case hex."""
    return hashlib.sha256(password.encode()).hexdigest()


def hash_key(user: str) -> str:
    """The key of a user's hash in the ``redis-acl`` secret: a template field name (``event_relay``), so that the
    agent's ``error-on-missing-key`` refuses a missing one (``index`` would render ``<no value>`` instead)."""
    return user.replace("-", "_")


def agent_template(body: Callable[[Callable[[str], str]], str], hashes_path: str, delimiters: tuple[str, str]) -> str:
    """A Vault agent template rendering ``body`` with each user's hash read from the KV v2 secret at
    ``hashes_path``."""
    left, right = delimiters
    return (
        f'{left}- with secret "{hashes_path}" -{right}'
        + body(lambda user: f"{left} .Data.data.{hash_key(user)} {right}")
        + f"{left}- end {right}"
    )
