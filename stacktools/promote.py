"""Promotion: copy a tested release train (exact chart versions, and each image's repository, tag and digest) from
one stack to another.

Only the train moves; sizing, domains and secret references of the target stay as they are. The target's stack file
is edited in place with its comments and key order kept, and promoting twice changes nothing the second time.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from stacks import names
from stacks.config import StackConfig
from stacks.loader import StackConfigError, deploy_refusals, load
from stacks.stackfile import parse_stack_config, path_of, read_stack_config
from stacks.versions import is_exact_version, is_pinned_tag, version_key
from stacktools.diff import PlanDiff, diff_plans
from stacktools.plan import plan_config

#: What names one image: where it is and which build. A release of an image this project builds (or a move to it, as
#: from Bitnami's frozen Redis to this project's) changes these together, so they move together.
IMAGE_FIELDS: Final = ("registry", "repository", "tag", "digest")
_IMAGES: Final = (
    "redis.images.redis",
    "redis.images.sentinel",
    "redis.images.exporter",
    "redis.images.kubectl",
    "redis.images.osShell",
    "zitadel.image",
    "zitadel.loginImage",
    "zitadel.postgresImage",
    "events.relay.image",
)
#: The release train: every chart version and image reference a release consists of (config key paths, camelCase).
TRAIN: Final[tuple[str, ...]] = (
    "redis.chart.version",
    *(f"{image}.{field}" for image in _IMAGES[:5] for field in IMAGE_FIELDS),
    "zitadel.chart.version",
    *(f"{image}.{field}" for image in _IMAGES[5:] for field in IMAGE_FIELDS),
    "edge.chart.version",
)
#: The train's entries that have an order (a digest has none; the tag beside it does).
_ORDERED: Final = (".version", ".tag")


class PromotionError(RuntimeError):
    pass


def train_of(cfg: StackConfig) -> dict[str, str]:
    document = cfg.model_dump(by_alias=True)
    train: dict[str, str] = {}
    for path in TRAIN:
        node: Any = document
        for part in path.split("."):
            node = node[part]
        train[path] = "" if node is None else str(node)  # an image without a digest
    return train


def unpinned(train: dict[str, str]) -> list[str]:
    def pinned(path: str, value: str) -> bool:
        if path.endswith(".version"):
            return is_exact_version(value)
        return is_pinned_tag(value) if path.endswith(".tag") else True

    return [f"{path} = {value!r}" for path, value in train.items() if not pinned(path, value)]


@dataclass
class Promotion:
    source: str
    target: str
    moves: dict[str, tuple[str, str]] = field(default_factory=dict)
    plan_diff: PlanDiff | None = None
    written: Path | None = None
    #: What ``pulumi up`` of the promoted target would still refuse (``stacks.rules.DEPLOY_RULES``).
    blockers: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.moves)

    def render(self) -> str:
        if not self.moves:
            lines = [f"{self.target} already runs {self.source}'s release train: nothing to promote."]
            if self.blockers:
                lines += ["", *refusal_lines(self.target, self.blockers)]
            return "\n".join(lines) + "\n"
        lines = [f"Promoting {self.source}'s release train to {self.target}:"]
        lines += [f"  ~ {path}: {old or '(none)'} → {new or '(none)'}" for path, (old, new) in self.moves.items()]
        lines.append("")
        if self.plan_diff is not None:
            lines.append(self.plan_diff.render().rstrip("\n"))
            lines.append("")
        if self.blockers:
            lines += [*refusal_lines(self.target, self.blockers), ""]
        lines.append(f"Wrote {self.written}." if self.written else "Dry run: nothing written.")
        return "\n".join(lines) + "\n"


def refusal_lines(stack: str, blockers: Sequence[str]) -> list[str]:
    """What ``pulumi up`` of ``stack`` refuses, as the promotion and the release print it."""
    return [f"{stack} cannot be deployed yet (pulumi up refuses):", *(f"  {blocker}" for blocker in blockers)]


def stack_yaml() -> YAML:
    """ruamel.yaml set to keep a stack file's comments, quotes and key order."""
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096
    return yaml


def set_path(document: CommentedMap, path: str, value: str) -> None:
    """Set config key ``path`` in a stack file's document; ``""`` removes it (an image without a digest), and the
    mappings it leaves empty."""
    section, *rest = path.split(".")
    config = document.setdefault("config", CommentedMap())
    keys = [f"{names.PROJECT}:{section}", *rest]
    if value == "":
        _remove(config, keys)
        return
    node = config
    for key in keys[:-1]:
        node = node.setdefault(key, CommentedMap())
    node[keys[-1]] = value


def _remove(node: CommentedMap, keys: list[str]) -> None:
    if len(keys) == 1:
        node.pop(keys[0], None)
        return
    child = node.get(keys[0])
    if isinstance(child, CommentedMap):
        _remove(child, keys[1:])
        if not child:
            del node[keys[0]]


def promote(
    source: str,
    target: str,
    project_dir: Path,
    *,
    dry_run: bool = False,
    allow_downgrade: bool = False,
) -> Promotion:
    source_file = path_of(project_dir, source)
    target_file = path_of(project_dir, target)
    try:
        source_cfg = load(source, *read_stack_config(source_file))
    except StackConfigError as exc:
        raise PromotionError(f"refusing to promote from an invalid stack:\n{exc}") from None
    wanted = train_of(source_cfg)
    loose = unpinned(wanted)
    if loose:
        raise PromotionError(f"{source}'s release train is not fully pinned: " + ", ".join(loose))

    target_config, target_secrets = read_stack_config(target_file)
    target_cfg = load(target, target_config, target_secrets)
    current = train_of(target_cfg)
    promotion = Promotion(source, target)
    promotion.moves = {path: (current[path], wanted[path]) for path in TRAIN if current[path] != wanted[path]}
    if not promotion.moves:
        # Nothing to move, but the train itself may still be undeployable (an image never released).
        promotion.blockers = deploy_refusals(target_cfg)
        return promotion
    backwards = [
        f"{path}: {old} → {new}"
        for path, (old, new) in promotion.moves.items()
        if path.endswith(_ORDERED) and version_key(new) < version_key(old)
    ]
    if backwards and not allow_downgrade:
        raise PromotionError(f"{target} would go backwards (use --allow-downgrade): " + "; ".join(backwards))

    yaml = stack_yaml()
    document = yaml.load(target_file.read_text()) or CommentedMap()
    for path in promotion.moves:
        set_path(document, path, wanted[path])
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    new_text = buffer.getvalue()

    promoted = parse_stack_config(new_text)
    try:
        promotion.blockers = deploy_refusals(load(target, *promoted))
    except StackConfigError as exc:
        raise PromotionError(f"the promoted {target} stack would be invalid:\n{exc}") from None
    promotion.plan_diff = diff_plans(
        plan_config(target, target_config, target_secrets, project_dir),
        plan_config(target, *promoted, project_dir),
        f"{target} (now)",
        f"{target} (promoted)",
    )
    if not dry_run:
        target_file.write_text(new_text)
        promotion.written = target_file
    return promotion
