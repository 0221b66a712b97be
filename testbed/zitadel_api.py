"""A stand-in for ZITADEL's Event API, for tests and benchmarks: ZITADEL itself does not run on this machine.

It mirrors what the bridge relies on, as read in ZITADEL v4.13.0 (``zitadel-event-source.md`` §3-4):

- ``POST /admin/v1/events/_search`` (``proto/zitadel/admin.proto`` ``ListEvents``): JSON body of
  ``ListEventsRequest`` — ``sequence`` (per aggregate: ``>`` when ascending, ``<`` when descending, 0 ignored),
  ``limit`` (0 or more than 1000 means 1000, ``internal/api/grpc/admin/event.go``), ``asc`` (default descending),
  ``editorUserId``, ``eventTypes`` (at most 30, OR, exact), ``aggregateId``, ``aggregateTypes`` (at most 10),
  ``resourceOwner``, ``range {since, until}`` (``created_at > since``, ``created_at < until``,
  ``internal/eventstore/repository/search_query.go``), ``from`` and the deprecated ``creationDate``; unknown fields
  are ignored (the gateway's ``DiscardUnknown``).
- The answer ``{"events": [...]}`` of ``zitadel.event.v1.Event`` (``proto/zitadel/event.proto``) in grpc-gateway's
  JSON (``internal/api/grpc/server/gateway.go``: lowerCamel names, zero values omitted — so no events is ``{}``;
  uint64 ``sequence`` as a string; timestamps with 0, 3, 6 or 9 fractional digits).
- Order by creation date, then the order inside the push (``ORDER BY position, in_tx_order``); events of one push
  share one creation date (``statement_timestamp()``), each aggregate counts its own ``sequence``.
- ``Authorization: Bearer <token>`` checked (401, gRPC code 16), the instance chosen by ``x-zitadel-instance-host``.
- ``POST /admin/v1/aggregates/types/_search`` and ``/admin/v1/events/types/_search``.

And what a test needs to make ZITADEL's hard cases happen on purpose: an event held back as "still committing"
(created in the past, invisible until committed, as a transaction that took its timestamp and has not committed),
bulk pushes sharing one timestamp, and injected failures. Listens on 127.0.0.1 on a free port.
"""

from __future__ import annotations

import bisect
import copy
import json
import multiprocessing
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer
from typing import Any

from testbed.loopback import HOST, QuietHandler, send_json

EVENTS_PATH = "/admin/v1/events/_search"
AGGREGATE_TYPES_PATH = "/admin/v1/aggregates/types/_search"
EVENT_TYPES_PATH = "/admin/v1/events/types/_search"
MAX_LIMIT = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def now_us() -> int:
    return time.time_ns() // 1000


def protojson_timestamp(micros: int) -> str:
    """A ``google.protobuf.Timestamp`` as protojson writes it: 0, 3, 6 (or 9) fractional digits, ``Z``."""
    moment = _EPOCH + timedelta(microseconds=micros)
    base = moment.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = micros % 1_000_000
    if fraction == 0:
        return base + "Z"
    if fraction % 1000 == 0:
        return f"{base}.{fraction // 1000:03d}Z"
    return f"{base}.{fraction:06d}Z"


def _parse_timestamp(text: str) -> int:
    return (datetime.fromisoformat(text) - _EPOCH) // timedelta(microseconds=1)


def _localized(kind: str, name: str) -> dict[str, str]:
    return {"key": f"{kind}.{name}", "localizedMessage": name}


@dataclass(frozen=True)
class EventSpec:
    """One event of a push: what a ZITADEL command writes."""

    type: str
    aggregate_type: str
    aggregate_id: str
    payload: dict[str, Any] | None = None
    resource_owner: str = "100000000000000001"
    editor: str = "200000000000000001"
    #: Top-level fields left out of the rendered event: a malformed event, as ZITADEL would never send it.
    omit: tuple[str, ...] = ()
    #: Top-level fields rendered with these values instead (``{"sequence": 1.5}``): malformed the same way.
    overrides: dict[str, Any] | None = None


@dataclass
class StoredEvent:
    created_us: int
    order: int
    spec: EventSpec
    sequence: int
    json_text: str = ""

    def key(self) -> tuple[int, int]:
        return (self.created_us, self.order)


class Held:
    """Events of a push that has taken its timestamp but not committed: invisible until ``commit``."""

    def __init__(self, api: StandInEventApi, events: list[StoredEvent]) -> None:
        self._api, self.events = api, events

    def commit(self) -> None:
        self._api._commit(self.events)


@dataclass
class Fault:
    status: int
    code: int
    message: str
    #: The answer's body verbatim instead of grpc-gateway's error object.
    body: str | None = None


@dataclass
class StandInEventApi:
    """ZITADEL's Event API for one instance, in memory, over HTTP on loopback."""

    token: str
    instance_host: str
    _events: list[StoredEvent] = field(default_factory=list)
    _keys: list[tuple[int, int]] = field(default_factory=list)
    _sequences: dict[tuple[str, str], int] = field(default_factory=dict)
    _order: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _faults: list[Fault] = field(default_factory=list)
    #: Every ``ListEvents`` body received, in order (tests check what the bridge asked for).
    requests: list[dict[str, Any]] = field(default_factory=list)
    #: When each of ``requests`` arrived (microseconds since the epoch).
    received_us: list[int] = field(default_factory=list)
    #: Keep ``requests``; off for benchmarks.
    record_requests: bool = True
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    # --- ZITADEL's side: pushes ---------------------------------------------------------------------------------------

    def push(self, *specs: EventSpec, created_us: int | None = None, hold: bool = False) -> Held:
        """One push transaction: its events share one creation date; sequences count per aggregate."""
        with self._lock:
            stamp = now_us() if created_us is None else created_us
            stored = []
            for spec in specs:
                key = (spec.aggregate_type, spec.aggregate_id)
                self._sequences[key] = self._sequences.get(key, 0) + 1
                self._order += 1
                event = StoredEvent(stamp, self._order, spec, self._sequences[key])
                event.json_text = json.dumps(self._render(event), separators=(",", ":"))
                stored.append(event)
        held = Held(self, stored)
        if not hold:
            held.commit()
        return held

    def _commit(self, events: Sequence[StoredEvent]) -> None:
        with self._lock:
            for event in events:
                key = event.key()
                if not self._keys or key > self._keys[-1]:
                    self._keys.append(key)
                    self._events.append(event)
                else:
                    index = bisect.bisect_left(self._keys, key)
                    self._keys.insert(index, key)
                    self._events.insert(index, event)

    @staticmethod
    def _render(event: StoredEvent) -> dict[str, Any]:
        s = event.spec
        doc: dict[str, Any] = {
            "editor": {"userId": s.editor, "displayName": "stand-in editor", "service": "Admin-API"},
            "aggregate": {
                "id": s.aggregate_id,
                "type": {"type": s.aggregate_type, "localized": _localized("AggregateType", s.aggregate_type)},
                "resourceOwner": s.resource_owner,
            },
            "sequence": str(event.sequence),
            "creationDate": protojson_timestamp(event.created_us),
            "type": {"type": s.type, "localized": _localized("EventTypes", s.type)},
        }
        if s.payload:
            doc["payload"] = s.payload
        for name in s.omit:
            doc.pop(name, None)
        doc.update(s.overrides or {})
        return doc

    @property
    def committed(self) -> int:
        with self._lock:
            return len(self._events)

    def all_events(self) -> list[StoredEvent]:
        with self._lock:
            return list(self._events)

    def fail_next(self, count: int, status: int = 503, code: int = 14, message: str = "stand-in outage") -> None:
        """The next ``count`` requests fail with a gRPC-gateway error."""
        with self._lock:
            self._faults += [Fault(status, code, message)] * count

    def answer_next(self, *bodies: str, status: int = 200) -> None:
        """The next requests, one per body, are answered with that body as it is (what ZITADEL never sends: a
        proxy's page, a JSON array, an object of the wrong shape), as ``application/json``."""
        with self._lock:
            self._faults += [Fault(status, 0, "", body) for body in bodies]

    # --- the API ------------------------------------------------------------------------------------------------------

    def search(self, body: dict[str, Any]) -> str:
        """The JSON answer of ``ListEvents`` for ``body`` (already authenticated)."""
        limit = int(body.get("limit") or 0)
        limit = MAX_LIMIT if limit <= 0 or limit > MAX_LIMIT else limit
        asc = bool(body.get("asc", False))
        sequence = int(body.get("sequence") or 0)
        event_types = set(body.get("eventTypes") or ())
        aggregate_types = set(body.get("aggregateTypes") or ())
        aggregate_id = body.get("aggregateId") or ""
        resource_owner = body.get("resourceOwner") or ""
        editor = body.get("editorUserId") or ""
        lower, upper = None, None  # exclusive bounds on created_us
        window = body.get("range")
        if isinstance(window, dict):  # range overrides from (the oneof)
            lower = _parse_timestamp(window["since"]) if window.get("since") else None
            upper = _parse_timestamp(window["until"]) if window.get("until") else None
        else:
            start = body.get("from") or body.get("creationDate")
            if start:
                if asc:
                    lower = _parse_timestamp(start)
                else:
                    upper = _parse_timestamp(start)
        with self._lock:
            lo = 0 if lower is None else bisect.bisect_right(self._keys, (lower, 1 << 62))
            hi = len(self._keys) if upper is None else bisect.bisect_left(self._keys, (upper, -1))
            indices: Iterator[int] = iter(range(lo, hi)) if asc else iter(range(hi - 1, lo - 1, -1))
            found: list[str] = []
            for index in indices:
                event = self._events[index]
                s = event.spec
                if event_types and s.type not in event_types:
                    continue
                if aggregate_types and s.aggregate_type not in aggregate_types:
                    continue
                if aggregate_id and s.aggregate_id != aggregate_id:
                    continue
                if resource_owner and s.resource_owner != resource_owner:
                    continue
                if editor and s.editor != editor:
                    continue
                if sequence and (event.sequence <= sequence if asc else event.sequence >= sequence):
                    continue
                found.append(event.json_text)
                if len(found) >= limit:
                    break
        # Zero values are omitted: no events is an empty object.
        return '{"events":[' + ",".join(found) + "]}" if found else "{}"

    def aggregate_types(self) -> list[str]:
        with self._lock:
            return sorted({e.spec.aggregate_type for e in self._events})

    def event_types(self) -> list[str]:
        with self._lock:
            return sorted({e.spec.type for e in self._events})

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str]:
        with self._lock:
            fault = self._faults.pop(0) if self._faults else None
        if fault is not None:
            return fault.status, _error(fault.code, fault.message) if fault.body is None else fault.body
        if headers.get("authorization") != f"Bearer {self.token}":
            return 401, _error(16, "Errors.Token.Invalid (AUTH-7fs1e)")
        if headers.get("x-zitadel-instance-host", headers.get("host", "")) != self.instance_host:
            return 404, _error(5, "unable to set instance using origin (ID=AUTHZ-IS4XHA)")
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            return 400, _error(3, "invalid JSON")
        if path == EVENTS_PATH:
            for name, most in (("aggregateTypes", 10), ("eventTypes", 30)):
                if len(request.get(name) or ()) > most:
                    return 400, _error(3, f"invalid ListEventsRequest.{name}: must contain no more than {most} item(s)")
            if self.record_requests:
                with self._lock:
                    self.requests.append(request)
                    self.received_us.append(now_us())
            return 200, self.search(request)
        if path == AGGREGATE_TYPES_PATH:
            types = [{"type": t, "localized": _localized("AggregateType", t)} for t in self.aggregate_types()]
            return 200, json.dumps({"aggregateTypes": types})
        if path == EVENT_TYPES_PATH:
            types = [{"type": t, "localized": _localized("EventTypes", t)} for t in self.event_types()]
            return 200, json.dumps({"eventTypes": types})
        return 404, _error(5, "Not Found")

    # --- lifecycle ----------------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://{HOST}:{self._server.server_address[1]}"

    def start(self) -> StandInEventApi:
        self._server = _make_server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="stand-in-event-api", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> StandInEventApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class ForkedServer:
    """The stand-in served from a child process (fork: it keeps the events pushed so far), so that a benchmark's
    bridge does not share a CPU-bound interpreter with the server. Pushes after the fork are not seen."""

    def __init__(self, api: StandInEventApi) -> None:
        self._server = _make_server(api)
        context = multiprocessing.get_context("fork")
        self._process = context.Process(target=self._server.serve_forever, daemon=True)
        self._process.start()
        self._server.server_close()  # the child keeps its own copy of the socket
        self.url = f"http://{HOST}:{self._server.server_address[1]}"

    def close(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
        self._process.join(timeout=10)


def _error(code: int, message: str) -> str:
    """grpc-gateway's error body (``google.rpc.Status``)."""
    return json.dumps({"code": code, "message": message, "details": []})


def _make_server(api: StandInEventApi) -> ThreadingHTTPServer:
    class Handler(QuietHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the bridge's client expects

        def do_POST(self) -> None:  # noqa: N802 - http.server dispatches on this name
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, text = api.handle(self.path, headers, body)
            send_json(self, status, text.encode())

    server = ThreadingHTTPServer((HOST, 0), Handler)
    server.daemon_threads = True
    return server


def local_relay_document(
    document: dict[str, Any],
    *,
    api: StandInEventApi | ForkedServer,
    instance_host: str,
    sentinel_ports: Sequence[int],
    token_file: str,
    username: str,
    password_file: str,
    metrics_port: int,
) -> dict[str, Any]:
    """A relay.json rendered for the cluster (``components.event_relay.relay_document``), pointed at this machine:
    the stand-in, the test bed's sentinels and Redis user, credential files a test wrote, and metrics on loopback
    only."""
    doc = copy.deepcopy(document)
    doc["zitadel"].update(url=api.url, instanceHost=instance_host, tokenFile=token_file)
    doc["redis"].update(
        sentinels=[[HOST, port] for port in sentinel_ports], username=username, passwordFile=password_file
    )
    doc["metricsPort"] = metrics_port
    doc["metricsHost"] = HOST
    return doc
