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
        """``status`` 0: no HTTP status could be read."""
        super().__init__(f"Event API answered {status}: {message}" if status else f"Event API: {message}")
        self.status = status


class MalformedAnswerError(ApiError):
    """An answer the Event API does not give: a body that is not JSON or not the response object, a field of the
    wrong shape, an HTTP response cut short (a proxy's page in between, a ZITADEL that changed its shape). Retried
    like an outage: nothing of it is used."""

    def __init__(self, message: str, status: int = 200) -> None:
        super().__init__(status, message)


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

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
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
            except (OSError, http.client.HTTPException) as exc:
                # A kept-alive connection the server closed: one fresh attempt, then the caller's backoff.
                self.close()
                if attempt == 1:
                    continue
                if isinstance(exc, OSError):
                    raise
                raise MalformedAnswerError(f"HTTP answer unreadable ({type(exc).__name__})", status=0) from None
            if response.status != 200:
                raise ApiError(response.status, _error_message(data))
            # What the body held stays out of the message (it may carry events' payloads): its size and type say
            # enough to tell a proxy's page from ZITADEL.
            what = f"{len(data)} bytes of {response.getheader('Content-Type', 'no content type')}"
            try:
                # ZITADEL answers "{}" when it has nothing to say, never an empty body.
                answer = json.loads(data)
            except ValueError:  # not JSON (nothing at all included), or not UTF-8
                raise MalformedAnswerError(f"body is not JSON ({what})") from None
            if not isinstance(answer, dict):
                raise MalformedAnswerError(f"body is not a JSON object ({what})")
            return answer
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
        # An event of the wrong shape is the bridge's to dead-letter.
        return _listed(self._post(EVENTS_PATH, body), "events")

    def aggregate_types(self) -> list[str]:
        return _type_names(self._post(AGGREGATE_TYPES_PATH, {}), "aggregateTypes")

    def event_types(self) -> list[str]:
        return _type_names(self._post(EVENT_TYPES_PATH, {}), "eventTypes")


def _listed(answer: dict[str, Any], key: str) -> list[Any]:
    """The list of a response whose only field it is. Zero values are omitted from ZITADEL's JSON, so an empty list
    is ``{}``; any other object is not the response, and taking it for an empty list would move the cursor past
    events never read."""
    if key not in answer and answer:
        raise MalformedAnswerError(f"an object without {key}")
    value = answer.get(key, [])
    if not isinstance(value, list):
        raise MalformedAnswerError(f"{key} is not a list")
    return value


def _type_names(answer: dict[str, Any], key: str) -> list[str]:
    """``{key: [{"type": "user", "localized": {...}}, ...]}``: the names. An entry without one spoils the list: a
    split that silently left out a type would skip that type's events."""
    names = [entry.get("type") if isinstance(entry, dict) else None for entry in _listed(answer, key)]
    if not all(isinstance(name, str) and name for name in names):
        raise MalformedAnswerError(f"{key}: an entry without a type name")
    return [str(name) for name in names]


def _error_message(data: bytes) -> str:
    """The gRPC status message of an error body (``{"code": 16, "message": "...", "details": []}``), short."""
    try:
        return str(json.loads(data).get("message", ""))[:200]
    except (ValueError, AttributeError):
        return data[:200].decode(errors="replace")
