"""Entry point of the policy pack: ``pulumi preview --policy-pack policy``."""

import sys
from pathlib import Path

# The policies share the project's own facts (names, DB layout, version rules) from stacks/.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import PolicyPack

from policy.policies import policies

PolicyPack(name="blinkchamber-identity", policies=policies())
