"""Typed stack configuration, environment defaults and the tooling around stacks (offline plan, diff, promotion)."""
