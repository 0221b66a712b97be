"""Entry point of the policy pack: ``pulumi preview --policy-pack policy``."""

import sys
from pathlib import Path

# The project: the pack shares its facts (names, the configuration's loader and rules) from stacks/, and reads each
# stack's configuration from the project's Pulumi.<stack>.yaml.
PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))

from pulumi_policy import PolicyPack  # noqa: E402

from policy.policies import policies, stack_files  # noqa: E402
from stacks.names import PROJECT  # noqa: E402

PolicyPack(name=PROJECT, policies=policies(stack_files(PROJECT_DIR)))
