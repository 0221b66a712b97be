"""An example job for the consumer library: a welcome mail for every new human user with an e-mail address.

``WelcomeMail(send)`` is a handler: ``Consumer(...).run(WelcomeMail(send), stop)``. ``send(address, user_id)``
raising makes the entry pending again (retried, then dead-lettered); returning acknowledges it. Other events are
acknowledged untouched. The mail itself is the product's; here it is whatever ``send`` does. Wrapped in
``Deduplicator(client, group=...).wrap(WelcomeMail(send))``, a copy of an event already mailed sends nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from relay.consumer import StreamEntry


class WelcomeMail:
    def __init__(self, send: Callable[[str, str], None]) -> None:
        self.send = send

    def __call__(self, entry: StreamEntry) -> None:
        if entry.taxonomy != "user.created" or entry.fields.get("type") == "user.machine.added":
            return
        address = entry.payload.get("email")
        if isinstance(address, str) and address:
            self.send(address, entry.fields["aggregate_id"])
