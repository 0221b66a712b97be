"""Debian's ``prometheus-redis-exporter`` (redis_exporter) on loopback, scraped once: what the chart's sidecar sees."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from collections.abc import Mapping

from testbed.loopback import HOST, free_port
from testbed.redisbed import wait_until

BINARY = "prometheus-redis-exporter"


def available() -> bool:
    return shutil.which(BINARY) is not None


def scrape(address: str, flags: Mapping[str, str]) -> dict[str, str]:
    """Start the exporter on ``address`` with ``flags`` (``name`` → value, as the chart's ``metrics.extraArgs``),
    scrape it once and stop it; the samples as ``name{labels}`` → value.

    Its environment holds what the chart's sidecar exports (``REDIS_USER=default`` and the chart's own password
    file's content): the flags must win over both."""
    listen = free_port()
    argv = [BINARY, "-redis.addr", address, "-web.listen-address", f"{HOST}:{listen}"]
    argv += [f"-{name}={value}" for name, value in flags.items()]
    env = {"REDIS_USER": "default", "REDIS_PASSWORD": "the chart's own password: never the exporter's"}
    exporter = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:

        def answer() -> str | None:
            with urllib.request.urlopen(f"http://{HOST}:{listen}/metrics", timeout=5) as response:
                text: str = response.read().decode()
            return text

        body = wait_until("the exporter to answer", answer, 10)
    finally:
        exporter.terminate()
        exporter.wait(timeout=10)
    return {line.split(" ")[0]: line.split(" ")[1] for line in body.splitlines() if line and not line.startswith("#")}
