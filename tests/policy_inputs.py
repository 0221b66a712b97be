"""What Pulumi's policy analyzer hands a policy, built from a resource the program declared under mocks; and the
stack facts the pack reads for the project's own stacks."""

from __future__ import annotations

from pulumi_policy import PolicyCustomTimeouts, PolicyResourceOptions, ResourceValidationArgs
from pulumi_policy.deserialize import deserialize_properties

from policy import policies as pack
from stacktools import mocked
from tests.conftest import PROJECT_DIR

#: The pack's own reading of the project's stack files (``Pulumi.dev.yaml``, ``Pulumi.prod.yaml``), as in a preview.
stack_facts: pack.FactsOf = pack.stack_files(PROJECT_DIR)


def options(protect: bool = False) -> PolicyResourceOptions:
    """A resource's options as the analyzer passes them: only ``protect`` matters to the pack."""
    return PolicyResourceOptions(
        protect=protect,
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
    )


def as_args(resource: mocked.RecordedResource) -> ResourceValidationArgs:
    # What the analyzer hands a policy: the inputs with secrets unwrapped.
    return ResourceValidationArgs(
        resource.type,
        deserialize_properties(resource.inputs),
        resource.urn,
        resource.name,
        options(resource.protect),
        None,
    )
