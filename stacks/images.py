"""The images this project builds: what the release pipeline builds them from and where it pushes them.

``.github/workflows/release.yml`` and ``./bin/release-image`` read this module (``python -m stacktools.ci
release-plan``); the stacks deploy these images by digest (``stacks/rules.py``), and a release writes the pushed
digest into dev's release train (``stacktools/release.py``), from where promotion carries it to prod.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from stacks.config import Image, StackConfig

#: Where the pipeline pushes: GitHub's registry, under the organization that owns the repository.
REGISTRY: Final = "ghcr.io"
NAMESPACE: Final = "blinkchamber"

#: A content address as registries and Kubernetes take it.
DIGEST_PATTERN: Final = r"^sha256:[0-9a-f]{64}$"

#: Redis for the Bitnami-compatible images: the newest 8.2 patch release (8.2.1, Bitnami's last, has RCE
#: advisories: stacks/advisories.py). The source archive and its SHA-256 are the ones Docker's official redis:8.2.10
#: image builds from (docker-library/repo-info, repos/redis/remote/8.2.10.md, at commit 0bdd94409df0).
REDIS_VERSION: Final = "8.2.10"
REDIS_SOURCE_URL: Final = f"https://github.com/redis/redis/archive/refs/tags/{REDIS_VERSION}.tar.gz"
REDIS_SOURCE_SHA256: Final = "d6de0ec3bce8eeba13ecbd7478dd56fb87a4bbe8ec832dd876892a86ac1a55ec"

#: Bitnami's container sources (Apache-2.0): the scripts the Redis chart runs (``/opt/bitnami/scripts``) come from
#: this commit, the newest read here holding ``bitnami/redis/8.2`` and ``bitnami/redis-sentinel/8.2`` (8.2.2, the
#: last 8.2 release Bitnami packaged).
BITNAMI_CONTAINERS: Final = "bitnami/containers"
BITNAMI_COMMIT: Final = "05d158924b7e30687e958a1b5c03b0437c7cbadc"


@dataclass(frozen=True)
class Upstream:
    """A directory of another repository at a fixed commit: the build context of an image."""

    repository: str
    commit: str
    path: str


@dataclass(frozen=True)
class OwnedImage:
    #: The image's name in the registry (``ghcr.io/blinkchamber/<name>``) and its build job in the workflow.
    name: str
    #: The release it belongs to (the workflow's and ``bin/release-image``'s first argument): images released together
    #: under one tag, in one pull request to dev's train.
    release: str
    #: Where a stack configures it (an ``Image`` model).
    config_key: str
    #: The Dockerfile, relative to the project.
    dockerfile: str
    #: A release tag: the relay's semantic version, or Bitnami's ``<redis>-debian-12-r<revision>``.
    tag_pattern: str
    #: The build context: the project itself, or a directory of ``upstream`` at its commit.
    upstream: Upstream | None = None
    build_args: tuple[tuple[str, str], ...] = ()
    #: True: nobody else builds this image, so a stack's image at ``config_key`` is this one wherever it is pushed.
    #: False: it is this one only at ``REGISTRY/repository`` (a stack may run a third party's image there instead).
    only_builder: bool = False

    @property
    def repository(self) -> str:
        return f"{NAMESPACE}/{self.name}"

    def reference(self, tag: str) -> str:
        return f"{REGISTRY}/{self.repository}:{tag}"

    def tag_problem(self, tag: str) -> str | None:
        if re.fullmatch(self.tag_pattern, tag):
            return None
        return f"{tag!r} is no release tag of {self.name} (expected {self.tag_pattern})"

    def configured(self, cfg: StackConfig) -> Image:
        node: object = cfg
        for part in self.config_key.split("."):
            node = getattr(node, re.sub(r"(?<!^)(?=[A-Z])", "_", part).lower())
        from stacks.config import Image

        assert isinstance(node, Image), self.config_key
        return node

    def builds(self, image: Image) -> bool:
        """Whether a stack's ``image`` at ``config_key`` is this project's build."""
        return self.only_builder or (image.registry, image.repository) == (REGISTRY, self.repository)


_REDIS_BUILD_ARGS: Final = (
    ("REDIS_VERSION", REDIS_VERSION),
    ("REDIS_SOURCE_URL", REDIS_SOURCE_URL),
    ("REDIS_SOURCE_SHA256", REDIS_SOURCE_SHA256),
)
_BITNAMI_TAG: Final = rf"{re.escape(REDIS_VERSION)}-debian-12-r\d+"

RELAY: Final = OwnedImage(
    name="event-relay",
    release="event-relay",
    config_key="events.relay.image",
    dockerfile="relay/Dockerfile",
    tag_pattern=r"\d+\.\d+\.\d+",
    only_builder=True,
)
REDIS: Final = OwnedImage(
    name="redis",
    release="redis",
    config_key="redis.images.redis",
    dockerfile="images/redis/Dockerfile",
    tag_pattern=_BITNAMI_TAG,
    upstream=Upstream(BITNAMI_CONTAINERS, BITNAMI_COMMIT, "bitnami/redis/8.2/debian-12"),
    build_args=_REDIS_BUILD_ARGS,
)
REDIS_SENTINEL: Final = OwnedImage(
    name="redis-sentinel",
    release="redis",
    config_key="redis.images.sentinel",
    dockerfile="images/redis-sentinel/Dockerfile",
    tag_pattern=_BITNAMI_TAG,
    upstream=Upstream(BITNAMI_CONTAINERS, BITNAMI_COMMIT, "bitnami/redis-sentinel/8.2/debian-12"),
    build_args=_REDIS_BUILD_ARGS,
)
OWNED_IMAGES: Final = (RELAY, REDIS, REDIS_SENTINEL)
#: The releases, in order: Redis and its Sentinel share a Redis version, so they are released (and promoted) together.
RELEASES: Final = tuple(dict.fromkeys(image.release for image in OWNED_IMAGES))


def owned_image(name: str) -> OwnedImage:
    for image in OWNED_IMAGES:
        if image.name == name:
            return image
    raise KeyError(f"{name!r} is no image this project builds ({', '.join(i.name for i in OWNED_IMAGES)})")


def release_images(release: str) -> tuple[OwnedImage, ...]:
    """The images of one release."""
    found = tuple(image for image in OWNED_IMAGES if image.release == release)
    if not found:
        raise KeyError(f"{release!r} is no release of this project ({', '.join(RELEASES)})")
    return found
