from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

PROJECT_DIR = Path(__file__).resolve().parent.parent
if str(PROJECT_DIR) not in sys.path:
    sys.path.insert(0, str(PROJECT_DIR))

from stacks.config import StackConfig  # noqa: E402
from stacks.loader import load  # noqa: E402
from stacks.stackfile import read_stack_config  # noqa: E402
from stacktools import mocked  # noqa: E402

STACKS = ("dev", "prod")


def stack_config(stack: str) -> StackConfig:
    config, secret_keys = read_stack_config(PROJECT_DIR / f"Pulumi.{stack}.yaml")
    return load(stack, config, secret_keys)


def record(stack: str, overrides: dict[str, Any] | None = None) -> mocked.Recording:
    """The program run under mocks with the stack file's config, optionally with some keys replaced."""
    config, secret_keys = read_stack_config(PROJECT_DIR / f"Pulumi.{stack}.yaml")
    config.update(overrides or {})
    return mocked.run_program(stack, config, secret_keys)


_RECORDINGS: dict[str, mocked.Recording] = {}


@pytest.fixture(params=STACKS)
def stack(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def cfg(stack: str) -> StackConfig:
    return stack_config(stack)


@pytest.fixture
def recording(stack: str) -> mocked.Recording:
    return recorded(stack)


def recorded(stack: str) -> mocked.Recording:
    """The stack file's run, once per stack per session: the program is deterministic and tests only read it.

    Not while mutmut records which tests reach which function (./bin/mutation): each test runs the program itself.
    """
    if os.environ.get("MUTANT_UNDER_TEST") == "stats":
        return record(stack)
    if stack not in _RECORDINGS:
        _RECORDINGS[stack] = record(stack)
    return _RECORDINGS[stack]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the program's entry point and stack files, for commands that edit stack files."""
    import shutil

    for name in ("__main__.py", "Pulumi.yaml", "Pulumi.dev.yaml", "Pulumi.prod.yaml"):
        shutil.copy(PROJECT_DIR / name, tmp_path / name)
    return tmp_path


@pytest.fixture
def git_project(tmp_path: Path) -> Path:
    """A git repository holding the working tree's program, committed once (the base of a change)."""
    import shutil
    import subprocess

    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "--quiet", str(repo)], check=True)
    ignore = shutil.ignore_patterns("__pycache__", ".venv", "build", "node_modules", ".*_cache")
    # pyproject.toml: under ./bin/mutation the mutated code run there reads its [tool.mutmut] settings.
    program = (
        *("stacks", "stacktools", "components", "__main__.py"),
        *("Pulumi.yaml", "Pulumi.dev.yaml", "Pulumi.prod.yaml"),
    )
    for name in (*program, "pyproject.toml"):
        source = PROJECT_DIR / name
        if source.is_dir():
            shutil.copytree(source, repo / name, ignore=ignore)
        else:
            shutil.copy(source, repo / name)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "--quiet", "-m", "base"], check=True)
    return repo
