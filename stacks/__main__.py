"""Stack tooling: ``python -m stacks plan STACK``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stacks import mocked
from stacks.loader import StackConfigError
from stacks.plan import plan_stack, render_tree, write_plan


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stacks", description=__doc__)
    parser.add_argument("--project-dir", default=str(mocked.PROJECT_DIR), help="where Pulumi.yaml lives")
    commands = parser.add_subparsers(dest="command", required=True)
    plan = commands.add_parser("plan", help="offline plan of a stack: no cluster, no Vault, no Pulumi account")
    plan.add_argument("stack", help="stack name, e.g. dev or prod")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON instead of a tree")
    plan.add_argument("--out", help="output folder (default build/STACK)")
    plan.set_defaults(run=_plan)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except StackConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
