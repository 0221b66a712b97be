"""The event relay: ZITADEL's domain events, read from its Event API, written once into Redis priority streams.

``relay.bridge`` is the service (one active per instance, through a lease in Redis); ``relay.consumer`` the library
the product's workers use to drain the streams. Nothing here imports the Pulumi program: the image holds only this
package, and its settings arrive as one JSON file rendered by ``components/event_relay.py``.
"""
