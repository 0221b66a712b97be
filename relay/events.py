"""ZITADEL's Event API events: parsing, timestamps, and the stream entries the bridge writes.

An event as ``POST /admin/v1/events/_search`` returns it (``zitadel.event.v1.Event``, proto/zitadel/event.proto,
rendered by grpc-gateway's JSONPb with lowerCamel names and zero values omitted)::

    {"editor": {"userId": "...", "displayName": "...", "service": "..."},
     "aggregate": {"id": "...", "type": {"type": "user", "localized": {...}}, "resourceOwner": "..."},
     "sequence": "3", "creationDate": "2026-03-23T10:00:00.123456Z", "payload": {...},
     "type": {"type": "user.human.added", "localized": {...}}}

``sequence`` is a uint64, so a JSON string; it is per aggregate. There is no instance ID and no position.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from relay.taxonomy import classify, filter_payload

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO: Final = timedelta(microseconds=1)


def parse_timestamp(text: str) -> int:
    """Microseconds since the epoch of an RFC 3339 timestamp (Postgres keeps microseconds; finer digits drop)."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without a zone: {text!r}")
    return (moment - _EPOCH) // _MICRO


def format_timestamp(micros: int) -> str:
    """RFC 3339 in UTC with six fractional digits, as protobuf's JSON mapping accepts it."""
    return (_EPOCH + timedelta(microseconds=micros)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    aggregate_type: str
    aggregate_id: str
    resource_owner: str
    sequence: int
    created_us: int
    editor: str
    payload: Any


class UnusableEventError(ValueError):
    """An event the bridge cannot use: it goes to the dead-letter stream with ``reason``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise UnusableEventError("unparseable", f"{what} missing or not a string")
    return value


#: ``sequence`` is a uint64, starting at 1 per aggregate.
_MAX_SEQUENCE: Final = 2**64 - 1


def _sequence(raw: dict[str, Any]) -> int:
    """The event's sequence: a JSON string of decimal digits (protojson's uint64), or an integral JSON number.

    Anything else is refused rather than coerced: ``int(1.5)`` would make it 1, the dedup key of another event of
    the aggregate, and the event would be skipped as that event's duplicate instead of dead-lettered.
    """
    if "sequence" not in raw:
        # Zero values are omitted, so a missing sequence is 0: no event of ZITADEL's has it.
        raise UnusableEventError("unparseable", "sequence missing")
    value = raw["sequence"]
    if isinstance(value, str) and value.isascii() and value.isdigit():
        sequence = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        sequence = value
    else:
        sequence = 0
    if not 0 < sequence <= _MAX_SEQUENCE:
        shown = json.dumps(value, default=str)
        raise UnusableEventError("unparseable", f"sequence not a positive integer: {shown[:40]}")
    return sequence


def parse_event(raw: Any) -> Event:
    """An Event API event; ``UnusableEventError`` when a field the bridge needs is missing or malformed."""
    if not isinstance(raw, dict):
        raise UnusableEventError("unparseable", "event is not an object")
    type_ = raw.get("type")
    event_type = type_.get("type") if isinstance(type_, dict) else None
    if not isinstance(event_type, str) or not event_type:
        raise UnusableEventError("unclassifiable", "event type missing or not a string")
    aggregate = raw.get("aggregate")
    if not isinstance(aggregate, dict):
        raise UnusableEventError("unparseable", "aggregate missing")
    aggregate_type_ = aggregate.get("type")
    aggregate_type = _text(aggregate_type_.get("type") if isinstance(aggregate_type_, dict) else None, "aggregate.type")
    aggregate_id = _text(aggregate.get("id"), "aggregate.id")
    sequence = _sequence(raw)
    try:
        created_us = parse_timestamp(_text(raw.get("creationDate"), "creationDate"))
    except ValueError as exc:
        if isinstance(exc, UnusableEventError):
            raise
        raise UnusableEventError("unparseable", "creationDate is not an RFC 3339 timestamp") from None
    editor = raw.get("editor")
    editor_id = editor.get("userId", "") if isinstance(editor, dict) else ""
    return Event(
        type=event_type,
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        resource_owner=str(aggregate.get("resourceOwner", "")),
        sequence=sequence,
        created_us=created_us,
        editor=str(editor_id),
        payload=raw.get("payload"),
    )


def dedup_id(event: Event) -> str:
    """ZITADEL's primary key of an event within its instance: (aggregate type, aggregate ID, sequence). The instance
    is in the name of the dedup record's key."""
    return f"{event.aggregate_type}:{event.aggregate_id}:{event.sequence}"


def entry_fields(instance: str, event: Event) -> tuple[str, dict[str, str]]:
    """The priority stream (high/normal/low) and the fields of the entry an event becomes."""
    c = classify(event.type)
    fields = {
        "taxonomy": c.name,
        "type": event.type,
        "instance": instance,
        "aggregate_type": event.aggregate_type,
        "aggregate_id": event.aggregate_id,
        "resource_owner": event.resource_owner,
        "sequence": str(event.sequence),
        "created_at": format_timestamp(event.created_us),
        "editor": event.editor,
        "payload": json.dumps(filter_payload(c.event_class, event.payload), separators=(",", ":"), sort_keys=True),
    }
    return c.priority, fields


def dead_letter_fields(instance: str, raw: Any, reason: str, detail: str) -> tuple[str, dict[str, str]]:
    """A dead-letter entry for an unusable event: the reason and its raw identifiers, never its payload.

    Returns the dedup id too (a digest of the raw event), so a page read twice dead-letters the event once.
    """
    ids: dict[str, str] = {}
    if isinstance(raw, dict):
        type_ = raw.get("type")
        aggregate = raw.get("aggregate") if isinstance(raw.get("aggregate"), dict) else {}
        agg_type = aggregate.get("type") if isinstance(aggregate, dict) else None
        candidates = {
            "type": type_.get("type") if isinstance(type_, dict) else None,
            "aggregate_type": agg_type.get("type") if isinstance(agg_type, dict) else None,
            "aggregate_id": aggregate.get("id") if isinstance(aggregate, dict) else None,
            "resource_owner": aggregate.get("resourceOwner") if isinstance(aggregate, dict) else None,
            "sequence": raw.get("sequence"),
            "created_at": raw.get("creationDate"),
        }
        # A malformed sequence (1.5, -5) is kept as it came: the raw identifier, next to the reason.
        ids = {k: str(v)[:256] for k, v in candidates.items() if isinstance(v, (str, int, float)) and v != ""}
    digest = hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:32]
    fields = {
        "dead_letter.reason": reason,
        "dead_letter.detail": detail[:500],
        "dead_letter.source": "bridge",
        "instance": instance,
        **ids,
    }
    return f"raw:{digest}", fields
