"""Stack tooling: offline plan, diff and promotion.

    python -m stacks plan STACK [--json]            what STACK declares, written under build/STACK/
    python -m stacks diff A B [--json]              what changes from stack A to stack B
    python -m stacks diff --base REV STACK [--json] what changes in STACK from git revision REV to the working tree
    python -m stacks promote dev prod [--dry-run]   copy dev's release train into Pulumi.prod.yaml
    python -m stacks advisories [STACK ...]         each pin's known advisories and exceptions (default: every stack)

Exit codes: 0 success (diff/promote: nothing changed), 1 diff/promote: something changed (advisories: a prod pin
has a known Critical advisory without an exception in force), 2 error.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from stacks import advisories
from stacks.loader import StackConfigError, load
from stacks.stackfile import path_of, read_stack_config, stacks_in
from stacktools import mocked
from stacktools.diff import RevisionError, diff_plans, plan_at_revision
from stacktools.plan import plan_stack, render_tree, write_plan
from stacktools.promote import PromotionError, promote


def _plan(args: argparse.Namespace) -> int:
    plan = plan_stack(args.stack, Path(args.project_dir))
    out_dir = Path(args.out) if args.out else Path(args.project_dir) / "build" / args.stack
    files = write_plan(plan, out_dir)
    if args.json:
        print(json.dumps(plan.to_json(), indent=2, sort_keys=True))
    else:
        print(render_tree(plan, files), end="")
        print(f"\nWritten under {out_dir}: plan.json, plan.txt, helm/*.values.yaml, vault/*.hcl")
    return 0


def _diff(args: argparse.Namespace) -> int:
    project_dir = Path(args.project_dir)
    if args.base:
        if len(args.stacks) != 1:
            raise UsageError("diff --base REV takes exactly one stack")
        stack = args.stacks[0]
        old = plan_at_revision(stack, args.base, project_dir)
        result = diff_plans(old, plan_stack(stack, project_dir), f"{stack}@{args.base}", f"{stack} (working tree)")
    else:
        if len(args.stacks) != 2:
            raise UsageError("diff takes two stacks (diff dev prod) or --base REV and one stack")
        old_stack, new_stack = args.stacks
        result = diff_plans(plan_stack(old_stack, project_dir), plan_stack(new_stack, project_dir))
    if args.json:
        print(json.dumps(result.to_json(), indent=2, sort_keys=True))
    else:
        print(result.render(), end="")
    return 1 if result.changed else 0


def _promote(args: argparse.Namespace) -> int:
    outcome = promote(
        args.source,
        args.target,
        Path(args.project_dir),
        dry_run=args.dry_run,
        allow_downgrade=args.allow_downgrade,
    )
    print(outcome.render(), end="")
    return 1 if outcome.changed else 0


def _advisories(args: argparse.Namespace) -> int:
    project_dir = Path(args.project_dir)
    today = datetime.date.today()
    failed = False
    for index, stack in enumerate(args.stacks or stacks_in(project_dir)):
        cfg = load(stack, *read_stack_config(path_of(project_dir, stack)))
        print(("\n" if index else "") + advisories.render(cfg, today), end="")
        failed = failed or bool(advisories.check(cfg, today))
    return 1 if failed else 0


class UsageError(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stacks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--project-dir", default=str(mocked.PROJECT_DIR), help="where Pulumi.yaml lives")
    commands = parser.add_subparsers(dest="command", required=True)
    plan = commands.add_parser("plan", help="offline plan of a stack: no cluster, no Vault, no Pulumi account")
    plan.add_argument("stack", help="stack name, e.g. dev or prod")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON instead of a tree")
    plan.add_argument("--out", help="output folder (default build/STACK)")
    plan.set_defaults(run=_plan)
    diff = commands.add_parser("diff", help="Terraform-style comparison of two plans")
    diff.add_argument("stacks", nargs="+", help="two stacks, or one with --base")
    diff.add_argument("--base", metavar="REV", help="compare STACK at git revision REV with the working tree")
    diff.add_argument("--json", action="store_true", help="print the diff as JSON")
    diff.set_defaults(run=_diff)
    prom = commands.add_parser("promote", help="copy the release train (chart versions, image tags) between stacks")
    prom.add_argument("source", help="stack whose tested release is promoted, e.g. dev")
    prom.add_argument("target", help="stack file to update, e.g. prod")
    prom.add_argument("--dry-run", action="store_true", help="show the change, write nothing")
    prom.add_argument("--allow-downgrade", action="store_true", help="allow moving the target to older versions")
    prom.set_defaults(run=_promote)
    adv = commands.add_parser("advisories", help="each pinned component's known advisories, sources and exceptions")
    adv.add_argument("stacks", nargs="*", help="stacks to report (default: every Pulumi.<stack>.yaml)")
    adv.set_defaults(run=_advisories)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except StackConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, RevisionError, PromotionError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
