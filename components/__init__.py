"""Pulumi components of the identity tier. Each takes a typed arguments object (its own configuration section and what
it knows of its neighbours, built from the stack's configuration by ``wiring``) and turns it into resources; the Helm
values and Vault texts they pass are built by plain functions of the same arguments, callable and testable without
Pulumi."""
