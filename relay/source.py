"""A client of ZITADEL's Event API (Admin API v1; the only event reader ZITADEL has, ``proto/zitadel/admin.proto``).

- ``POST /admin/v1/events/_search`` (``ListEvents``, permission ``events.read``): ``asc``, ``limit`` (0 or more than
  1000 means 1000), ``range {since, until}`` (strict: ``created_at > since`` and ``created_at < until``),
  ``aggregateTypes`` (at most 10), ``eventTypes`` (at most 30, exact). ZITADEL's gateway ignores unknown fields, so a
  misspelled filter silently matches everything: the request is built here in one place.
- ``POST /admin/v1/aggregates/types/_search`` and ``POST /admin/v1/events/types/_search``: every aggregate and
  event type, used only to split a window too dense to page through.

The instance is chosen by the ``x-zitadel-instance-host`` header (ZITADEL's ``InstanceHostHeaders`` default), so the
bridge can call ZITADEL's Service inside the cluster for the instance's public domain.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any, Final

from relay.events import format_timestamp

EVENTS_PATH: Final = "/admin/v1/events/_search"
AGGREGATE_TYPES_PATH: Final = "/admin/v1/aggregates/types/_search"
EVENT_TYPES_PATH: Final = "/admin/v1/events/types/_search"
#: ZITADEL's cap on ``limit`` (internal/api/grpc/admin/event.go).
MAX_LIMIT: Final = 1000
MAX_AGGREGATE_TYPES: Final = 10
MAX_EVENT_TYPES: Final = 30


class ApiError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Event API answered {status}: {message}")
        self.status = status


def list_events_body(
    *,
    since_us: int | None,
    until_us: int,
    limit: int,
    aggregate_types: Sequence[str] = (),
    event_types: Sequence[str] = (),
) -> dict[str, Any]:
    """A ``ListEventsRequest`` as JSON: ascending, by creation date, within ``(since, until)``."""
    window: dict[str, str] = {"until": format_timestamp(until_us)}
    if since_us is not None:
        window["since"] = format_timestamp(since_us)
    body: dict[str, Any] = {"asc": True, "limit": min(limit, MAX_LIMIT), "range": window}
    if aggregate_types:
        body["aggregateTypes"] = list(aggregate_types)
    if event_types:
        body["eventTypes"] = list(event_types)
    return body


class EventApi:
    def __init__(self, url: str, instance_host: str, token: Callable[[], str], timeout: float = 10.0) -> None:
        parsed = urllib.parse.urlsplit(url)
        self._https = parsed.scheme == "https"
        self._host = parsed.hostname or "localhost"
        self._port = parsed.port or (443 if self._https else 80)
        self._prefix = parsed.path.rstrip("/")
        self._instance_host = instance_host
        self._token = token
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self._timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        payload = json.dumps(body).encode()
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Authorization": f"Bearer {self._token()}",
            "x-zitadel-instance-host": self._instance_host,
        }
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request("POST", self._prefix + path, body=payload, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException):
                # A kept-alive connection the server closed: one fresh attempt, then the caller's backoff.
                self.close()
                if attempt == 2:
                    raise
                continue
            if response.status != 200:
                raise ApiError(response.status, _error_message(data))
            return json.loads(data) if data else {}
        raise AssertionError("unreachable")

    def list_events(
        self,
        *,
        since_us: int | None,
        until_us: int,
        limit: int,
        aggregate_types: Sequence[str] = (),
        event_types: Sequence[str] = (),
    ) -> list[Any]:
        body = list_events_body(
            since_us=since_us,
            until_us=until_us,
            limit=limit,
            aggregate_types=aggregate_types,
            event_types=event_types,
        )
        # Zero values are omitted from ZITADEL's JSON: an empty result is "{}".
        events = self._post(EVENTS_PATH, body).get("events", [])
        if not isinstance(events, list):
            raise ApiError(200, "events is not a list")
        return events

    def aggregate_types(self) -> list[str]:
        return [t["type"] for t in self._post(AGGREGATE_TYPES_PATH, {}).get("aggregateTypes", [])]

    def event_types(self) -> list[str]:
        return [t["type"] for t in self._post(EVENT_TYPES_PATH, {}).get("eventTypes", [])]


def _error_message(data: bytes) -> str:
    """The gRPC status message of an error body (``{"code": 16, "message": "...", "details": []}``), short."""
    try:
        return str(json.loads(data).get("message", ""))[:200]
    except (ValueError, AttributeError):
        return data[:200].decode(errors="replace")
