"""Debian's ``prometheus-redis-exporter`` (redis_exporter) on loopback: what the chart's sidecar sees, scraped once
(``scrape``) or kept running for a Prometheus server to scrape (``Exporter``)."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from collections.abc import Mapping

from testbed.loopback import HOST, free_port, stop
from testbed.redisbed import wait_until

BINARY = "prometheus-redis-exporter"


def available() -> bool:
    return shutil.which(BINARY) is not None


class Exporter:
    """The exporter for one Redis at ``address`` with ``flags`` (``name`` → value, as the chart's
    ``metrics.extraArgs``), listening on ``port`` (a free loopback port unless given: a scrape config may name it
    before the Redis exists) until ``close``.

    Its environment holds what the chart's sidecar exports (``REDIS_USER=default`` and the chart's own password
    file's content): the flags must win over both."""

    def __init__(self, address: str, flags: Mapping[str, str], port: int | None = None) -> None:
        self.address = address
        self.port = free_port() if port is None else port
        self.argv = [BINARY, "-redis.addr", address, "-web.listen-address", f"{HOST}:{self.port}"]
        self.argv += [f"-{name}={value}" for name, value in flags.items()]
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        """``host:port``, as a scrape config names it."""
        return f"{HOST}:{self.port}"

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://{self.target}/metrics", timeout=5) as response:
            text: str = response.read().decode()
        return text

    def start(self) -> Exporter:
        env = {"REDIS_USER": "default", "REDIS_PASSWORD": "the chart's own password: never the exporter's"}
        self._popen = subprocess.Popen(self.argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(f"the exporter of {self.address} to answer", self.metrics_text, 10)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        stop(self._popen)

    def __enter__(self) -> Exporter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def scrape(address: str, flags: Mapping[str, str]) -> dict[str, str]:
    """Start the exporter on ``address`` with ``flags``, scrape it once and stop it; the samples as
    ``name{labels}`` → value."""
    with Exporter(address, flags) as exporter:
        body = exporter.metrics_text()
    return {line.split(" ")[0]: line.split(" ")[1] for line in body.splitlines() if line and not line.startswith("#")}
