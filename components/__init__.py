"""Pulumi components of the identity tier. Each turns typed configuration into resources; the Helm values and
Vault texts they pass are built by plain functions in the same package, callable and testable without Pulumi."""
