"""The pinned upstream artifacts the tests check against: chart archives and ZITADEL's ``cmd/defaults.yaml``.

Each artifact is fetched once from upstream into a user cache directory and reused from there. A machine without
network points ``BLINKCHAMBER_ARTIFACTS`` at an offline mirror holding the same files under the names
``<chart>-<version>.tgz`` and ``zitadel-defaults-<ref>.yaml``; when it is set, nothing is fetched and nothing is
cached. An artifact that can be had from neither raises ``ArtifactUnavailableError`` with a one-line message.

A fetch works in a private temporary folder, Helm's own folders (``HELM_CACHE_HOME`` and the rest) included, so
neither the user's Helm setup nor the cache keeps anything of it but the artifact itself.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import helm_python

from stacks.config import Chart, Image

#: The offline mirror: a folder of artifacts, taken instead of the network.
MIRROR_ENV: Final = "BLINKCHAMBER_ARTIFACTS"
#: Overrides the cache directory (default ``$XDG_CACHE_HOME/blinkchamber/artifacts``, else ``~/.cache/...``).
CACHE_ENV: Final = "BLINKCHAMBER_CACHE_DIR"

#: Where ZITADEL's raw source files are served; ``<base>/<ref>/cmd/defaults.yaml``.
ZITADEL_RAW_BASE: Final = "https://raw.githubusercontent.com/zitadel/zitadel"

_FETCH_TIMEOUT_SECONDS: Final = 30


class ArtifactUnavailableError(RuntimeError):
    """An artifact is neither in the mirror nor in the cache, and cannot be fetched. The message is one line."""


@dataclass(frozen=True)
class ChartRef:
    """A chart at an exact version: ``oci://host/path/name``, or a chart name inside an HTTP ``repository``."""

    chart: str
    version: str
    repository: str = ""

    @classmethod
    def of(cls, chart: Chart) -> ChartRef:
        """The chart a stack's typed config pins (``cfg.redis.chart``, ``cfg.zitadel.chart``)."""
        return cls(chart=chart.chart, version=chart.version, repository=chart.repository)

    @property
    def name(self) -> str:
        return self.chart.rstrip("/").rsplit("/", 1)[-1]

    @property
    def file_name(self) -> str:
        """The archive's name, as ``helm pull`` writes it and as the mirror holds it."""
        return f"{self.name}-{self.version}.tgz"

    @property
    def source(self) -> str:
        if self.repository:
            return f"{self.repository.rstrip('/')} (chart {self.name})"
        return self.chart

    @property
    def origin(self) -> str:
        """The URL of the chart's repository, which keys the cache (two repositories may share a chart name)."""
        return self.repository or self.chart.rsplit("/", 1)[0]


def zitadel_defaults_ref(image: Image) -> str:
    """The zitadel/zitadel ref whose ``cmd/defaults.yaml`` matches ``image`` (``cfg.zitadel.image``): its tag.

    ZITADEL tags its images and its sources alike (``v4.13.0``), so a promotion that moves the image moves the
    reference the configuration keys are checked against.
    """
    return image.tag


def zitadel_defaults_file_name(ref: str) -> str:
    return f"zitadel-defaults-{ref}.yaml"


def default_cache_dir() -> Path:
    if override := os.environ.get(CACHE_ENV):
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "blinkchamber" / "artifacts"


def mirror_from_environment() -> Path | None:
    value = os.environ.get(MIRROR_ENV)
    return Path(value) if value else None


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 200 else text[:197] + "..."


def _cache_folder(url: str) -> str:
    """A readable, collision-free folder name for a source URL (``charts.zitadel.com``, ``127.0.0.1_8080/x``)."""
    parsed = urllib.parse.urlsplit(url)
    return re.sub(r"[^A-Za-z0-9._/-]", "_", f"{parsed.netloc}{parsed.path}").strip("/")


class Artifacts:
    """Fetches artifacts into ``cache_dir`` on first use, or takes them from ``mirror`` only when one is given.

    ``zitadel_raw_base`` is where ZITADEL's source files are served; chart locations come with each ``ChartRef``.
    """

    def __init__(
        self,
        cache_dir: Path | None = None,
        mirror: Path | None = None,
        zitadel_raw_base: str = ZITADEL_RAW_BASE,
    ) -> None:
        self.cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
        self.mirror = mirror
        self.zitadel_raw_base = zitadel_raw_base.rstrip("/")

    @classmethod
    def from_environment(cls) -> Artifacts:
        return cls(mirror=mirror_from_environment())

    def chart(self, ref: ChartRef) -> Path:
        """The path of the chart archive ``ref``."""

        def pull(folder: Path) -> Path:
            destination = folder / "pulled"
            destination.mkdir()
            _pull_isolated(ref, destination, folder / "helm")
            pulled = [p for p in destination.iterdir() if p.suffix == ".tgz"]
            if len(pulled) != 1:
                raise helm_python.HelmRepoError(f"pull wrote {len(pulled)} archives")
            return pulled[0]

        return self._get(ref.file_name, ref.source, _cache_folder(ref.origin), pull)

    def zitadel_defaults(self, ref: str) -> Path:
        """The path of ZITADEL's ``cmd/defaults.yaml`` at ``ref`` (a commit or tag of zitadel/zitadel)."""
        url = f"{self.zitadel_raw_base}/{ref}/cmd/defaults.yaml"

        def download(folder: Path) -> Path:
            target = folder / "defaults.yaml"
            with urllib.request.urlopen(url, timeout=_FETCH_TIMEOUT_SECONDS) as response:
                target.write_bytes(response.read())
            return target

        return self._get(zitadel_defaults_file_name(ref), url, _cache_folder(self.zitadel_raw_base), download)

    def _get(self, file_name: str, source: str, cache_folder: str, fetch: Callable[[Path], Path]) -> Path:
        if self.mirror is not None:
            mirrored = self.mirror / file_name
            if not mirrored.is_file():
                raise ArtifactUnavailableError(f"{file_name} is not in the mirror {self.mirror} ({MIRROR_ENV})")
            return mirrored
        cached = self.cache_dir / cache_folder / file_name
        if cached.is_file():
            return cached
        # Fetch into a private folder; only a whole artifact creates the cache entry, renamed into place so that a
        # reader sees the whole file or none. A failed fetch leaves nothing behind.
        with tempfile.TemporaryDirectory(prefix="blinkchamber-fetch-") as folder:
            try:
                fetched = fetch(Path(folder))
            except (helm_python.HelmError, urllib.error.URLError, OSError, subprocess.SubprocessError) as error:
                raise ArtifactUnavailableError(
                    f"{file_name}: not cached in {cached.parent} and not fetched from {source}: {_one_line(error)}; "
                    f"set {MIRROR_ENV} to a folder holding {file_name}"
                ) from None
            cached.parent.mkdir(parents=True, exist_ok=True)
            with (
                fetched.open("rb") as whole,
                tempfile.NamedTemporaryFile(dir=cached.parent, prefix=".fetch-", delete=False) as partial,
            ):
                shutil.copyfileobj(whole, partial)
            os.replace(partial.name, cached)
        return cached


#: Runs one ``helm_python.pull`` in a fresh interpreter: ``pull(chart, **options)`` from the JSON argument.
_PULL_SCRIPT: Final = """
import json, sys
import helm_python
args = json.loads(sys.argv[1])
try:
    helm_python.pull(args.pop("chart"), **args)
except helm_python.HelmError as error:
    sys.exit(" ".join(str(error).split()))
"""


def helm_environment(home: Path) -> dict[str, str]:
    """Helm's own folders (repository index cache, repositories file, registry logins) under ``home``."""
    return {
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "HELM_REGISTRY_CONFIG": str(home / "config" / "registry" / "config.json"),
    }


def _pull_isolated(ref: ChartRef, destination: Path, helm_home: Path) -> None:
    """``helm pull`` with Helm's folders under ``helm_home``, never the user's ``~/.cache/helm`` and ``~/.config/helm``.

    The Go library reads the environment once, when it is loaded, so the variables cannot be set around a call in
    this process: the pull runs in a child process that loads the library with them.
    """
    args: dict[str, str] = {"chart": ref.chart, "version": ref.version, "destination": str(destination)}
    if ref.repository:
        args.update(chart=ref.name, repo_url=ref.repository)
    result = subprocess.run(
        [sys.executable, "-c", _PULL_SCRIPT, json.dumps(args)],
        env={**os.environ, **helm_environment(helm_home)},
        capture_output=True,
        text=True,
        timeout=_FETCH_TIMEOUT_SECONDS * 4,
        check=False,
    )
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        raise helm_python.HelmRepoError(lines[-1] if lines else f"helm pull exited with {result.returncode}")


def chart_archive(ref: ChartRef) -> Path:
    """The chart archive ``ref``, from the mirror of ``BLINKCHAMBER_ARTIFACTS`` or the user cache."""
    return Artifacts.from_environment().chart(ref)


def zitadel_defaults(ref: str) -> Path:
    """ZITADEL's ``cmd/defaults.yaml`` at ``ref``, from the mirror of ``BLINKCHAMBER_ARTIFACTS`` or the user cache."""
    return Artifacts.from_environment().zitadel_defaults(ref)
