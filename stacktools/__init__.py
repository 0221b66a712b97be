"""Stack tooling: the offline plan, diff, promotion and the CI commands. The stack configuration lives in ``stacks``."""
