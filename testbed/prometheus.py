"""A real Prometheus server (Debian's ``prometheus``) on loopback, scraping what the test bed runs and evaluating
alert rules, with short scrape and evaluation intervals so that an alert's life takes seconds.

The config is generated here from the scrape jobs and rule files a test gives; the server listens on 127.0.0.1 on
a free port, keeps its TSDB in its own folder, and ``PrometheusServer.close`` always stops it. The helpers wrap
``/api/v1/query``, ``/api/v1/alerts``, ``/api/v1/targets``, ``/api/v1/label/__name__/values`` and
``/api/v1/metadata``, with bounded waits. ``metric_names_in`` reads the metric names out of a PromQL expression.

Prometheus applies a new set of targets at most every 5 s (its discovery manager's throttle): a scene saves that
time by starting the server before the processes it scrapes, on ports chosen beforehand.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from testbed.loopback import HOST, free_port, stop
from testbed.redisbed import BedError, wait_until

BINARY = "prometheus"
PROMTOOL = "promtool"


def available() -> bool:
    return shutil.which(BINARY) is not None and shutil.which(PROMTOOL) is not None


class PrometheusError(RuntimeError):
    """The API answered with an error (a query that does not parse, a bad parameter)."""


@dataclass(frozen=True)
class Target:
    """One ``host:port`` to scrape, with the labels the Prometheus Operator would give it (``namespace``, ``pod``):
    the alert rules select by them."""

    address: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ScrapeJob:
    """One scrape job: its name (Prometheus's ``job`` label) and its targets."""

    name: str
    targets: tuple[Target, ...]
    metrics_path: str = "/metrics"


@dataclass(frozen=True)
class Sample:
    """One element of an instant vector."""

    labels: dict[str, str]
    value: float


def write_rules(path: Path, groups: Sequence[Mapping[str, Any]]) -> Path:
    """A rule file of ``groups`` (a PrometheusRule's ``spec.groups`` has the rule file's shape), checked by
    ``promtool check rules`` so that a bad rule fails here and not as a server that never loads it."""
    path.write_text(yaml.safe_dump({"groups": [dict(g) for g in groups]}, sort_keys=False))
    done = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise PrometheusError(f"promtool check rules {path}:\n{done.stdout}{done.stderr}")
    return path


def config(jobs: Sequence[ScrapeJob], rule_files: Sequence[Path], interval_s: float) -> dict[str, Any]:
    interval = f"{int(interval_s * 1000)}ms"
    return {
        "global": {
            "scrape_interval": interval,
            # A scrape may take as long as its interval: the exporter's INFO and stream reads are fast on loopback.
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {
                "job_name": job.name,
                "metrics_path": job.metrics_path,
                "static_configs": [{"targets": [t.address], "labels": dict(t.labels)} for t in job.targets],
            }
            for job in jobs
        ],
    }


class PrometheusServer:
    """``prometheus`` with a generated config; ``start`` returns once it is ready."""

    def __init__(
        self, root: Path, jobs: Sequence[ScrapeJob], rule_files: Sequence[Path] = (), interval_s: float = 1.0
    ) -> None:
        self.root = root
        self.jobs = tuple(jobs)
        self.rule_files = tuple(rule_files)
        self.interval_s = interval_s
        self.port = free_port()
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    # --- lifecycle -----------------------------------------------------------------------------------------------

    def start(self) -> PrometheusServer:
        self.root.mkdir(parents=True, exist_ok=True)
        conf = self.root / "prometheus.yml"
        conf.write_text(yaml.safe_dump(config(self.jobs, self.rule_files, self.interval_s), sort_keys=False))
        argv = [
            BINARY,
            f"--config.file={conf}",
            f"--storage.tsdb.path={self.root / 'data'}",
            f"--web.listen-address={HOST}:{self.port}",
            # The package's defaults point at /etc/prometheus; nothing here uses consoles.
            f"--web.console.templates={self.root}",
            f"--web.console.libraries={self.root}",
        ]
        with (self.root / "prometheus.log").open("wb") as log:
            self._popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        try:
            wait_until("Prometheus to be ready", self._ready, 20)
        except Exception as exc:
            self.close()
            raise BedError(f"{exc}\n{self.log_tail()}") from exc
        except BaseException:
            self.close()
            raise
        return self

    def _ready(self) -> bool:
        if self._popen is not None and self._popen.poll() is not None:
            raise BedError(f"prometheus exited with {self._popen.returncode}")
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
            return bool(response.status == 200)

    def close(self) -> None:
        stop(self._popen)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log_tail(self, lines: int = 20) -> str:
        log = self.root / "prometheus.log"
        text = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else ["no log"]
        return "--- prometheus\n" + "\n".join(text)

    # --- the HTTP API --------------------------------------------------------------------------------------------

    def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/<path>``; its ``data``, or ``PrometheusError`` with the server's ``error``."""
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[Sample]:
        """An instant query evaluated now; a scalar comes back as one sample without labels."""
        data = self.api("query", query=expr)
        if data["resultType"] == "vector":
            return [Sample(dict(r["metric"]), float(r["value"][1])) for r in data["result"]]
        if data["resultType"] == "scalar":
            return [Sample({}, float(data["result"][1]))]
        raise PrometheusError(f"{expr}: a {data['resultType']}, not an instant vector")

    def alerts(self) -> list[dict[str, Any]]:
        """Every pending or firing alert: ``labels`` (``alertname`` among them), ``state``, ``activeAt``, ``value``."""
        found: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return found

    def metric_names(self) -> set[str]:
        """Every metric name the server holds a series of (what the scrapes brought)."""
        return set(self.api("label/__name__/values"))

    def scraped_metric_names(self) -> set[str]:
        """``metric_names`` and the series names of every family the scraped targets declare (``/api/v1/metadata``):
        a labelled counter declares its family before its first child exists. Families are named as OpenMetrics
        names them (a counter without ``_total``, a histogram without ``_bucket``)."""
        found = self.metric_names()
        for family, entries in self.api("metadata").items():
            found.add(family)
            kinds = {entry["type"] for entry in entries}
            if "counter" in kinds:
                found.add(family if family.endswith("_total") else f"{family}_total")
            if kinds & {"histogram", "gaugehistogram"}:
                found |= {f"{family}_bucket", f"{family}_count", f"{family}_sum"}
            if "summary" in kinds:
                found |= {f"{family}_count", f"{family}_sum"}
        return found

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self.api("targets", state="active")["activeTargets"]
        return active

    # --- bounded waits -------------------------------------------------------------------------------------------

    def wait_targets_up(self, timeout: float = 20) -> None:
        """Every configured target scraped successfully at least once."""
        want = sum(len(job.targets) for job in self.jobs)

        def up() -> bool:
            targets = self.targets()
            return len(targets) == want and all(t["health"] == "up" for t in targets)

        self._wait("every target up", up, timeout)

    def wait_query(self, what: str, expr: str, check: Callable[[list[Sample]], bool], timeout: float) -> list[Sample]:
        """Evaluate ``expr`` until ``check`` holds for its result; the result."""

        def holds() -> list[list[Sample]]:
            result = self.query(expr)
            return [result] if check(result) else []  # wrapped: an empty result may be what is awaited

        found: list[list[Sample]] = self._wait(what, holds, timeout)
        return found[0]

    def wait_alert(
        self, name: str, timeout: float, state: str = "firing", labels: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """The alerts named ``name`` in ``state`` (and with ``labels``, when given), once there is at least one."""
        wanted = dict(labels or {})

        def found() -> list[dict[str, Any]]:
            return [
                a
                for a in self.alerts()
                if a["labels"].get("alertname") == name
                and a["state"] == state
                and all(a["labels"].get(k) == v for k, v in wanted.items())
            ]

        result: list[dict[str, Any]] = self._wait(f"alert {name} {wanted} {state}", found, timeout)
        return result

    def _wait(self, what: str, check: Callable[[], Any], timeout: float) -> Any:
        # Polled a few times per evaluation: each sleep is a quarter of the interval.
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                result = check()
                if result:
                    return result
            except (OSError, PrometheusError) as exc:
                last = exc
            time.sleep(self.interval_s / 4)
        raise BedError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last})\n{self.log_tail()}")


# --- the metric names a PromQL expression reads --------------------------------------------------------------------

#: Grafana's template variables (``$__rate_interval``, ``${namespace}``, ``[[pod]]``): stand-ins a query may hold.
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$[A-Za-z_]\w*|\[\[[^\]]*\]\]")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_NAME_MATCHER = re.compile(r'__name__\s*=\s*"([^"]+)"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NUMBER = re.compile(r"(?<![\w:])(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?(?:ms|[smhdwy])?)")
_IDENTIFIER = re.compile(r"[A-Za-z_:][\w:]*")
#: Words of the language that are not metric names when they stand alone.
_KEYWORDS = frozenset(
    [
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "inf",
        "nan",
        "start",
        "end",
    ]
)


def metric_names_in(expr: str) -> set[str]:
    """The metric names ``expr`` selects (``name{...}`` and ``{__name__="name"}``); functions, aggregations,
    keywords, label names, strings, numbers, durations and Grafana variables are not."""
    text = _GRAFANA_VARIABLE.sub(" 1 ", expr)
    names = set(_NAME_MATCHER.findall(text))
    text = _STRING.sub(" ", text)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers (their values are gone with the strings)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = _GROUPING.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    for match in _IDENTIFIER.finditer(text):
        word = match.group()
        followed_by_call = text[match.end() :].lstrip().startswith("(")
        if not followed_by_call and word.lower() not in _KEYWORDS:
            names.add(word)
    return names
