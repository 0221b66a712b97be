"""Fetching the pinned upstream artifacts: from a chart repository and a raw-file server on loopback, into a cache,
or from the offline mirror; and one clear line when neither is there."""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import helm_python
import pytest

from stacks.config import StackConfig
from testbed import artifacts, charts
from testbed.artifacts import Artifacts, ArtifactUnavailableError, ChartRef
from testbed.loopback import free_port
from tests import rendering
from tests.conftest import PROJECT_DIR, stack_config

REF = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Upstream:
    """A chart repository (``index.yaml`` + a packaged chart) and ZITADEL's raw files, served on 127.0.0.1."""

    root: Path
    url: str
    server: http.server.ThreadingHTTPServer
    thread: threading.Thread

    @property
    def chart(self) -> ChartRef:
        return ChartRef(chart="demo", repository=f"{self.url}/charts", version="0.1.0")

    @property
    def raw_base(self) -> str:
        return f"{self.url}/zitadel/zitadel"

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
            self.thread.join()
        self.server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Upstream]:
    root = tmp_path / "upstream"
    repository = root / "charts"
    repository.mkdir(parents=True)
    (tmp_path / "src").mkdir()
    helm_python.Chart.create("demo", tmp_path / "src")
    helm_python.package(tmp_path / "src" / "demo", destination=repository, version="0.1.0")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    helm_python.repo_index_generate(repository, base_url=f"{url}/charts")
    defaults = root / "zitadel" / "zitadel" / REF / "cmd" / "defaults.yaml"
    defaults.parent.mkdir(parents=True)
    defaults.write_text("Caches:\n  Connectors:\n    Redis:\n      Enabled: false\n")
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    served = Upstream(root=root, url=url, server=server, thread=thread)
    try:
        yield served
    finally:
        served.stop()


def fetcher(tmp_path: Path, upstream: Upstream, mirror: Path | None = None) -> Artifacts:
    return Artifacts(cache_dir=tmp_path / "cache", mirror=mirror, zitadel_raw_base=upstream.raw_base)


def test_a_chart_is_pulled_once_then_served_from_the_cache(tmp_path: Path, upstream: Upstream) -> None:
    fetch = fetcher(tmp_path, upstream)
    path = fetch.chart(upstream.chart)
    assert path.name == "demo-0.1.0.tgz"
    assert path.is_relative_to(tmp_path / "cache")
    archive = charts.load(path)
    assert (archive.name, archive.version) == ("demo", "0.1.0")
    first = path.read_bytes()
    upstream.stop()
    assert fetch.chart(upstream.chart) == path
    assert path.read_bytes() == first
    # Only the archive stays: no temporary download left next to it.
    assert [p.name for p in path.parent.iterdir()] == ["demo-0.1.0.tgz"]


def test_zitadel_defaults_are_downloaded_once_then_served_from_the_cache(tmp_path: Path, upstream: Upstream) -> None:
    fetch = fetcher(tmp_path, upstream)
    path = fetch.zitadel_defaults(REF)
    assert path.name == f"zitadel-defaults-{REF}.yaml"
    assert path.read_text() == "Caches:\n  Connectors:\n    Redis:\n      Enabled: false\n"
    upstream.stop()
    assert fetch.zitadel_defaults(REF).read_text() == path.read_text()


def test_a_fresh_fetcher_on_the_same_cache_needs_no_network(tmp_path: Path, upstream: Upstream) -> None:
    fetcher(tmp_path, upstream).chart(upstream.chart)
    upstream.stop()
    assert fetcher(tmp_path, upstream).chart(upstream.chart).name == "demo-0.1.0.tgz"


def test_the_mirror_wins_over_network_and_cache(tmp_path: Path, upstream: Upstream) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "demo-0.1.0.tgz").write_bytes(b"mirrored")
    (mirror / f"zitadel-defaults-{REF}.yaml").write_text("mirrored: true\n")
    fetcher(tmp_path, upstream).chart(upstream.chart)  # a cached copy exists too
    fetch = fetcher(tmp_path, upstream, mirror=mirror)
    assert fetch.chart(upstream.chart) == mirror / "demo-0.1.0.tgz"
    assert fetch.zitadel_defaults(REF) == mirror / f"zitadel-defaults-{REF}.yaml"


def test_the_mirror_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BLINKCHAMBER_ARTIFACTS", str(tmp_path))
    assert Artifacts.from_environment().mirror == tmp_path
    monkeypatch.delenv("BLINKCHAMBER_ARTIFACTS")
    assert Artifacts.from_environment().mirror is None


def test_a_file_missing_from_the_mirror_is_one_line(tmp_path: Path, upstream: Upstream) -> None:
    with pytest.raises(ArtifactUnavailableError) as raised:
        fetcher(tmp_path, upstream, mirror=tmp_path).chart(upstream.chart)
    assert str(raised.value) == f"demo-0.1.0.tgz is not in the mirror {tmp_path} (BLINKCHAMBER_ARTIFACTS)"


def test_nothing_reachable_is_one_line_naming_artifact_source_and_variable(tmp_path: Path, upstream: Upstream) -> None:
    upstream.stop()
    fetch = fetcher(tmp_path, upstream)
    with pytest.raises(ArtifactUnavailableError) as raised:
        fetch.chart(upstream.chart)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(
        f"demo-0.1.0.tgz: not cached in {tmp_path / 'cache'}/127.0.0.1_{upstream.url.rsplit(':', 1)[1]}/charts "
        f"and not fetched from {upstream.url}/charts (chart demo): "
    )
    assert message.endswith("; set BLINKCHAMBER_ARTIFACTS to a folder holding demo-0.1.0.tgz")
    with pytest.raises(ArtifactUnavailableError) as raised:
        fetch.zitadel_defaults(REF)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"zitadel-defaults-{REF}.yaml: not cached in {tmp_path / 'cache'}/127.0.0.1_")
    assert f" and not fetched from {upstream.raw_base}/{REF}/cmd/defaults.yaml: " in message
    assert message.endswith(f"; set BLINKCHAMBER_ARTIFACTS to a folder holding zitadel-defaults-{REF}.yaml")
    # A failed fetch leaves nothing in the cache that a later run would take for the artifact.
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_an_unreachable_oci_registry_is_one_line(tmp_path: Path) -> None:
    ref = ChartRef(chart=f"oci://127.0.0.1:{free_port()}/charts/demo", version="0.1.0")
    with pytest.raises(ArtifactUnavailableError) as raised:
        Artifacts(cache_dir=tmp_path).chart(ref)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(
        f"demo-0.1.0.tgz: not cached in {tmp_path}/127.0.0.1_{ref.chart.rsplit(':', 1)[1].split('/')[0]}/charts "
        f"and not fetched from {ref.chart}: "
    )


def test_a_failed_fetch_creates_no_cache_folder(tmp_path: Path, upstream: Upstream) -> None:
    upstream.stop()
    fetch = fetcher(tmp_path, upstream)
    with pytest.raises(ArtifactUnavailableError):
        fetch.chart(upstream.chart)
    assert not (tmp_path / "cache").exists()
    with pytest.raises(ArtifactUnavailableError):
        fetch.zitadel_defaults(REF)
    assert not (tmp_path / "cache").exists()


#: Helm's folders come from these (else from HOME): the pull must set its own, whatever the user has.
HELM_FOLDER_VARIABLES = (
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "HELM_CACHE_HOME",
    "HELM_CONFIG_HOME",
    "HELM_DATA_HOME",
    "HELM_REGISTRY_CONFIG",
    "HELM_REPOSITORY_CACHE",
    "HELM_REPOSITORY_CONFIG",
)


def test_a_pull_leaves_helms_own_folders_alone(tmp_path: Path, upstream: Upstream) -> None:
    # Helm keeps a repository index cache, a repositories file and registry logins under HOME. Helm's library reads
    # the environment when it is loaded, so the fetch runs in a process that starts with the temporary HOME.
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in HELM_FOLDER_VARIABLES and k != artifacts.MIRROR_ENV}
    fetch = (
        "import sys; from pathlib import Path; from testbed.artifacts import Artifacts, ChartRef; "
        "print(Artifacts(Path(sys.argv[1])).chart(ChartRef(chart='demo', repository=sys.argv[2], version='0.1.0')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", fetch, str(tmp_path / "cache"), upstream.chart.repository],
        env={**env, "HOME": str(home)},
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip())
    assert path == tmp_path / "cache" / f"127.0.0.1_{upstream.url.rsplit(':', 1)[1]}" / "charts" / "demo-0.1.0.tgz"
    assert list(home.rglob("*")) == []
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == [path]


def test_a_missing_upstream_file_is_not_cached(tmp_path: Path, upstream: Upstream) -> None:
    with pytest.raises(ArtifactUnavailableError, match="HTTP Error 404"):
        fetcher(tmp_path, upstream).zitadel_defaults("no-such-ref")
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_the_tests_fail_with_the_line_and_no_trace() -> None:
    def unavailable() -> None:
        raise ArtifactUnavailableError("x.tgz: not cached; set BLINKCHAMBER_ARTIFACTS")

    with pytest.raises(pytest.fail.Exception) as raised:
        rendering.available(unavailable)
    assert str(raised.value) == "x.tgz: not cached; set BLINKCHAMBER_ARTIFACTS"
    assert raised.value.pytrace is False


def test_cache_dir_follows_xdg_and_the_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("BLINKCHAMBER_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert artifacts.default_cache_dir() == tmp_path / "xdg" / "blinkchamber" / "artifacts"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert artifacts.default_cache_dir() == tmp_path / "home" / ".cache" / "blinkchamber" / "artifacts"
    monkeypatch.setenv("BLINKCHAMBER_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert artifacts.default_cache_dir() == tmp_path / "elsewhere"


def test_pinned_artifacts_have_the_mirror_file_names(cfg: StackConfig) -> None:
    assert ChartRef.of(cfg.redis.chart).file_name == "redis-23.1.1.tgz"
    assert ChartRef.of(cfg.redis.chart).source == "oci://registry-1.docker.io/bitnamicharts/redis"
    assert ChartRef.of(cfg.zitadel.chart).file_name == "zitadel-9.34.0.tgz"
    assert ChartRef.of(cfg.zitadel.chart).source == "https://charts.zitadel.com (chart zitadel)"
    assert ChartRef.of(stack_config("dev").edge.chart).file_name == "gateway-helm-v1.9.0.tgz"
    assert ChartRef.of(stack_config("dev").edge.chart).source == "oci://docker.io/envoyproxy/gateway-helm"
    assert artifacts.zitadel_defaults_file_name(artifacts.zitadel_defaults_ref(cfg.zitadel.image)) == (
        "zitadel-defaults-v4.13.0.yaml"
    )
