"""Runs of the program under mocks in one process are independent of each other."""

from __future__ import annotations

from pathlib import Path

from stacks.stackfile import read_stack_config
from stacktools import mocked


def test_an_output_of_an_earlier_run_does_not_leak_into_the_next(project: Path) -> None:
    config, secret_keys = read_stack_config(project / "Pulumi.dev.yaml")
    with (project / "__main__.py").open("a") as f:
        f.write('pulumi.export("onlyInTheFirstRun", "x")\n')
    first = mocked.run_program("dev", config, secret_keys, program=project / "__main__.py")
    assert first.outputs["onlyInTheFirstRun"].value == "x"
    second = mocked.run_program("dev", config, secret_keys)
    assert "onlyInTheFirstRun" not in second.outputs
    assert "redisMasterAddress" in second.outputs
