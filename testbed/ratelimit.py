"""An independent re-implementation of envoyproxy/ratelimit's fixed-window Redis scheme, and of how Envoy Gateway
turns a shared global rule into the descriptor Envoy sends, for tests on real Redis. It is not the ratelimit binary
(no Go toolchain or image here): it reproduces the commands and key names that binary sends, from these sources.

envoyproxy/ratelimit (HEAD f2fb157):

- ``src/limiter/cache_key.go`` L62-82: key = ``prefix + domain + "_" + Σ(entry.key + "_" + entry.value + "_")
  + str(now // divider * divider)``, the window start of the limit's unit;
- ``src/utils/utilities.go`` L20-39: dividers SECOND 1, MINUTE 60, HOUR 3600, DAY 86400, WEEK 604800, MONTH 30 days,
  YEAR 365 days;
- ``src/redis/fixed_cache_impl.go`` L35-38: each hit is ``INCRBY key hits`` then ``EXPIRE key seconds`` in one
  pipeline (no MULTI); L168-171: seconds = divider + ``Int63n(EXPIRATION_JITTER_MAX_SECONDS)`` when the jitter is
  above 0 (so 0 .. jitter-1 extra seconds);
- ``src/limiter/base_limiter.go`` L104: over the limit when the count after the increment exceeds
  ``requests_per_unit``; L135-140: a shadow-mode limit answers OK anyway.

envoyproxy/gateway v1.9.0, ``internal/xds/translator/ratelimit.go``:

- L241-246: a shared rule's domain is its name without ``/rule/<i>`` (``stripRuleIndexSuffix`` L1053), i.e.
  ``<policy namespace>/<policy name>`` (rule names: ``internal/gatewayapi/helpers.go`` L579-580);
- L262-283: the first entry is the generic key ``(<ns>/<name>/rule/<i>, <ns>/<name>/rule/<i>)``;
- then, in this order (L288-298): each header match (Distinct: ``rule-<d>-match-<m>`` with the header's value,
  L374-383), the method, the path (``rule-<d>-path`` both ways, L459-481), the CIDR (``masked_remote_address`` with
  the CIDR, then for Distinct ``remote_address`` with the client address, L548-559); ``d`` counts the rules of the
  same sharedness before it (L806-820);
- L534-545: the Distinct ``remote_address`` value is the formatter ``%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%``, the
  whole address. The program's EnvoyPatchPolicy (``components/edge_objects.py``) turns it into
  ``%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT(<length>)%`` for one address family, which Envoy >= 1.38 renders as the
  client's network in CIDR notation (changelog 1.38.0, area formatter: ``10.1.10.23`` with 16 gives ``10.1.0.0/16``);
  ``prefix_lengths`` says which families are patched and to what length.

Envoy drops a descriptor when one of its actions cannot produce an entry (a missing header, a path or address that
does not match), so the rule does not apply to that request.
"""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import redis

UNIT_SECONDS: Final = {
    "Second": 1,
    "Minute": 60,
    "Hour": 3600,
    "Day": 86400,
    "Week": 604800,
    "Month": 2592000,
    "Year": 31536000,
}

Entry = tuple[str, str]


@dataclass(frozen=True)
class Request:
    """What the descriptor actions read of a request: its path, its headers (lower-case names), the client address."""

    path: str
    client: str
    headers: Mapping[str, str] = field(default_factory=dict)


def domain_of(policy_namespace: str, policy_name: str) -> str:
    return f"{policy_namespace}/{policy_name}"


def client_value(client: str, prefix_lengths: Mapping[int, int]) -> str:
    """The ``remote_address`` value: the address, or its network (``2001:db8:1:2::/64``) when its family is masked."""
    address = ipaddress.ip_address(client)
    length = prefix_lengths.get(address.version)
    if length is None:
        return client
    return ipaddress.ip_network(f"{address}/{length}", strict=False).with_prefixlen


def descriptor(
    policy_namespace: str,
    policy_name: str,
    rule_index: int,
    rule: Mapping[str, Any],
    request: Request,
    prefix_lengths: Mapping[int, int] | None = None,
) -> list[Entry] | None:
    """The descriptor Envoy sends for ``rule`` (the ``rule_index``-th of a BackendTrafficPolicy, every rule shared),
    or ``None`` when the rule does not apply to ``request``. ``prefix_lengths``: IP version → mask of the patched
    Distinct address value (none: the whole address, Envoy Gateway's own)."""
    if rule.get("shared") is not True:
        raise NotImplementedError("only shared rules: the program declares no other kind")
    name = f"{policy_namespace}/{policy_name}/rule/{rule_index}"
    entries: list[Entry] = [(name, name)]
    for selector in rule.get("clientSelectors") or []:
        if set(selector) - {"headers", "path", "sourceCIDR"}:
            raise NotImplementedError(f"selector fields {sorted(selector)}")
        for match_index, header in enumerate(selector.get("headers") or []):
            if header.get("type") != "Distinct":
                raise NotImplementedError("only Distinct header matches")
            value = request.headers.get(header["name"])
            if value is None:
                return None
            entries.append((f"rule-{rule_index}-match-{match_index}", value))
        if path := selector.get("path"):
            if path["type"] != "RegularExpression" or re.fullmatch(path["value"], request.path) is None:
                return None
            entries.append((f"rule-{rule_index}-path", f"rule-{rule_index}-path"))
        if cidr := selector.get("sourceCIDR"):
            network = ipaddress.ip_network(cidr["value"])
            address = ipaddress.ip_address(request.client)
            if address.version != network.version or address not in network:
                return None
            entries.append(("masked_remote_address", cidr["value"]))
            if cidr.get("type") == "Distinct":
                entries.append(("remote_address", client_value(request.client, prefix_lengths or {})))
    return entries


def cache_key(prefix: str, domain: str, entries: Sequence[Entry], unit: str, now: int) -> str:
    divider = UNIT_SECONDS[unit]
    body = "".join(f"{key}_{value}_" for key, value in entries)
    return f"{prefix}{domain}_{body}{now // divider * divider}"


@dataclass
class FixedWindow:
    """The counters as the ratelimit service keeps them, on one Redis connection (DB 0 in Sentinel mode)."""

    client: redis.Redis
    prefix: str
    jitter_max_seconds: int
    jitter: random.Random = field(default_factory=lambda: random.Random(0))

    def hit(self, domain: str, entries: Sequence[Entry], limit: Mapping[str, Any], now: int, hits: int = 1) -> int:
        """Count ``hits`` requests; returns the count after them."""
        key = cache_key(self.prefix, domain, entries, limit["unit"], now)
        seconds = UNIT_SECONDS[limit["unit"]]
        if self.jitter_max_seconds > 0:
            seconds += self.jitter.randrange(self.jitter_max_seconds)
        pipe = self.client.pipeline(transaction=False)
        pipe.incrby(key, hits)
        pipe.expire(key, seconds)
        count, _ = pipe.execute()
        return int(count)

    def allowed(self, domain: str, entries: Sequence[Entry], limit: Mapping[str, Any], now: int) -> bool:
        return self.hit(domain, entries, limit, now) <= int(limit["requests"])
