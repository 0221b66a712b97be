"""``python -m relay run | tail | replay-dead-letter``: the bridge, and two commands for operators.

All three read the relay's settings (``--config``, default ``$RELAY_CONFIG`` or /etc/event-relay/relay.json), so in
the cluster an operator runs them inside a relay pod: ``kubectl exec deploy/event-relay -- python -m relay tail``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any, cast

from relay import logs
from relay.bridge import Bridge
from relay.consumer import replay_dead_letter
from relay.metrics import Metrics, serve
from relay.settings import Settings, load, read_secret_file
from relay.source import EventApi
from relay.store import connect

DEFAULT_CONFIG = "/etc/event-relay/relay.json"


def _settings(args: argparse.Namespace) -> Settings:
    return load(args.config)


def cmd_run(args: argparse.Namespace) -> int:
    logs.setup(args.log_level)
    settings = _settings(args)
    z = settings.zitadel
    # Read on every request: a rotated token (a new file from the Vault agent) is picked up without a restart.
    api = EventApi(z.url, z.instance_host, lambda: read_secret_file(z.token_file), z.timeout)
    metrics = Metrics()
    bridge = Bridge(settings, api=api, client=connect(settings.redis), metrics=metrics)
    server = serve(metrics, bridge.health, settings.metrics_port, settings.metrics_host)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: bridge.stop())
    try:
        bridge.run()
    finally:
        server.shutdown()
        api.close()
    return 0


def _stream_names(settings: Settings, which: str) -> list[str]:
    s = settings.streams
    return {
        "high": [s.high],
        "normal": [s.normal],
        "low": [s.low],
        "dead-letter": [s.dead_letter],
        "all": [s.high, s.normal, s.low, s.dead_letter],
    }[which]


def cmd_tail(args: argparse.Namespace) -> int:
    """Print the last entries of the streams as JSON lines; with ``--follow``, then every new one. Read-only."""
    settings = _settings(args)
    client = connect(settings.redis)
    streams = _stream_names(settings, args.stream)
    last: dict[str, str] = {}
    for stream in streams:
        entries = cast(list[tuple[str, dict[str, str]]], client.xrevrange(stream, count=args.count))
        for entry_id, fields in reversed(entries):
            _print(stream, entry_id, fields)
        last[stream] = entries[0][0] if entries else "$"
    deadline = time.monotonic() + args.seconds if args.seconds else None
    while args.follow and (deadline is None or time.monotonic() < deadline):
        reply = client.xread(cast(Any, last), block=1000, count=100)
        got = cast(list[tuple[str, list[tuple[str, dict[str, str]]]]], reply)
        for stream, entries in got or []:
            for entry_id, fields in entries:
                _print(stream, entry_id, fields)
                last[stream] = entry_id
    return 0


def _print(stream: str, entry_id: str, fields: dict[str, Any]) -> None:
    print(json.dumps({"stream": stream, "id": entry_id, **fields}), flush=True)


def cmd_replay(args: argparse.Namespace) -> int:
    """Put dead-lettered entries back where they came from."""
    if not args.ids and not args.all:
        print("name entries with --id (repeatable), or --all", file=sys.stderr)
        return 2
    settings = _settings(args)
    client = connect(settings.redis)
    replayed, skipped = replay_dead_letter(client, settings.streams, args.ids, reason=args.reason)
    for r in replayed:
        print(json.dumps({"replayed": r.dead_letter_id, "stream": r.stream, "id": r.new_id}))
    for s in skipped:
        print(json.dumps({"skipped": s.dead_letter_id, "why": s.why}))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m relay", description=__doc__.splitlines()[0] if __doc__ else None)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=os.environ.get("RELAY_CONFIG", DEFAULT_CONFIG), help="the relay.json file")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", parents=[common], help="the bridge (what the Deployment runs)")
    run.add_argument("--log-level", default=os.environ.get("RELAY_LOG_LEVEL", "INFO"))
    run.set_defaults(func=cmd_run)
    tail = sub.add_parser("tail", parents=[common], help="print stream entries as JSON lines")
    tail.add_argument("--stream", choices=("high", "normal", "low", "dead-letter", "all"), default="all")
    tail.add_argument("--count", type=int, default=10, help="entries to show from each stream first")
    tail.add_argument("--follow", "-f", action="store_true", help="then print new entries as they arrive")
    tail.add_argument("--seconds", type=float, default=0, help="with --follow: stop after this long (0: never)")
    tail.set_defaults(func=cmd_tail)
    replay = sub.add_parser(
        "replay-dead-letter", parents=[common], help="put dead-lettered entries back on their stream"
    )
    replay.add_argument("--id", dest="ids", action="append", default=[], help="a dead-letter entry ID (repeatable)")
    replay.add_argument("--all", action="store_true", help="every dead-lettered entry")
    replay.add_argument("--reason", help="only entries with this dead_letter.reason (e.g. max_retries)")
    replay.set_defaults(func=cmd_replay)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args))
