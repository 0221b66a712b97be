"""Promotion: copy a tested release train (exact chart versions and image tags) from one stack to another.

Only the train moves; sizing, domains and secret references of the target stay as they are. The target's stack file
is edited in place with its comments and key order kept, and promoting twice changes nothing the second time.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from stacks import names
from stacks.config import StackConfig
from stacks.loader import StackConfigError, load
from stacks.stackfile import parse_stack_config, path_of, read_stack_config
from stacks.versions import is_exact_version, is_pinned_tag, version_key
from stacktools.diff import PlanDiff, diff_plans
from stacktools.plan import plan_config

#: The release train: every exact version a release consists of (config key paths, camelCase).
TRAIN: Final[tuple[str, ...]] = (
    "redis.chart.version",
    "redis.images.redis.tag",
    "redis.images.sentinel.tag",
    "redis.images.exporter.tag",
    "redis.images.kubectl.tag",
    "redis.images.osShell.tag",
    "zitadel.chart.version",
    "zitadel.image.tag",
    "zitadel.loginImage.tag",
    "zitadel.postgresImage.tag",
    "events.relay.image.tag",
    "edge.chart.version",
)


class PromotionError(RuntimeError):
    pass


def train_of(cfg: StackConfig) -> dict[str, str]:
    document = cfg.model_dump(by_alias=True)
    train: dict[str, str] = {}
    for path in TRAIN:
        node: Any = document
        for part in path.split("."):
            node = node[part]
        train[path] = str(node)
    return train


def unpinned(train: dict[str, str]) -> list[str]:
    def pinned(path: str, value: str) -> bool:
        return is_exact_version(value) if path.endswith(".version") else is_pinned_tag(value)

    return [f"{path} = {value!r}" for path, value in train.items() if not pinned(path, value)]


@dataclass
class Promotion:
    source: str
    target: str
    moves: dict[str, tuple[str, str]] = field(default_factory=dict)
    plan_diff: PlanDiff | None = None
    written: Path | None = None

    @property
    def changed(self) -> bool:
        return bool(self.moves)

    def render(self) -> str:
        if not self.moves:
            return f"{self.target} already runs {self.source}'s release train: nothing to promote.\n"
        lines = [f"Promoting {self.source}'s release train to {self.target}:"]
        lines += [f"  ~ {path}: {old} → {new}" for path, (old, new) in self.moves.items()]
        lines.append("")
        if self.plan_diff is not None:
            lines.append(self.plan_diff.render().rstrip("\n"))
            lines.append("")
        lines.append(f"Wrote {self.written}." if self.written else "Dry run: nothing written.")
        return "\n".join(lines) + "\n"


def _yaml() -> YAML:
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096
    return yaml


def _set_path(document: CommentedMap, path: str, value: str) -> None:
    section, *rest = path.split(".")
    config = document.setdefault("config", CommentedMap())
    node = config.setdefault(f"{names.PROJECT}:{section}", CommentedMap())
    for part in rest[:-1]:
        node = node.setdefault(part, CommentedMap())
    node[rest[-1]] = value


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
        return promotion
    backwards = [
        f"{path}: {old} → {new}" for path, (old, new) in promotion.moves.items() if version_key(new) < version_key(old)
    ]
    if backwards and not allow_downgrade:
        raise PromotionError(f"{target} would go backwards (use --allow-downgrade): " + "; ".join(backwards))

    yaml = _yaml()
    document = yaml.load(target_file.read_text()) or CommentedMap()
    for path in promotion.moves:
        _set_path(document, path, wanted[path])
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    new_text = buffer.getvalue()

    promoted = parse_stack_config(new_text)
    try:
        load(target, *promoted)
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
