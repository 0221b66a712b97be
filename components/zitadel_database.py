"""ZITADEL's bundled Postgres (dev): the subchart's two passwords, and the DSN ZITADEL connects with.

Declared before the Vault component, which stores the DSN for ZITADEL's Vault agent, and before ZITADEL's
component, which hands the passwords to the subchart in a Secret.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.passwords import random_password
from stacks import names

POSTGRES_PASSWORD_LENGTH = 32


@dataclass(frozen=True)
class BundledPostgresArgs:
    #: ZITADEL's namespace: the subchart's Service runs beside ZITADEL.
    namespace: str
    cluster_domain: str


class BundledPostgres:
    """The passwords of the chart's Postgres and the DSN with the superuser's.

    ZITADEL connects as ``postgres`` (the DSN). The subchart also creates the chart's application user (``zitadel``,
    the chart's ``postgresql.auth.username``) from the ``password`` key of the Secret at its first start, and its
    image refuses to start without that password: both stay generated.

    Plain resources, no component: the passwords keep the identity they have in existing stacks through an alias of
    their former parent (``former_parent``, a URN), and a new password would not reach a database that Postgres
    initialized with the old one.
    """

    def __init__(self, args: BundledPostgresArgs, *, former_parent: pulumi.Input[str] | None = None) -> None:
        aliases = [pulumi.Alias(parent=former_parent)] if former_parent is not None else None
        opts = pulumi.ResourceOptions(aliases=aliases)
        #: The superuser's (``postgres-password``), in the DSN.
        self.admin_password = random_password("postgres-admin-password", POSTGRES_PASSWORD_LENGTH, opts)
        #: The application user's (``password``), which only the subchart reads.
        self.user_password = random_password("postgres-app-password", POSTGRES_PASSWORD_LENGTH, opts)
        host = names.service_host(names.ZITADEL_POSTGRES_HOST, args.namespace, args.cluster_domain)
        #: What ZITADEL's Vault agent renders into its configuration (a Pulumi secret).
        self.dsn: pulumi.Output[str] = pulumi.Output.format(
            "postgresql://postgres:{0}@{1}:{2}/{3}?sslmode=disable",
            self.admin_password,
            host,
            names.ZITADEL_POSTGRES_PORT,
            names.ZITADEL_POSTGRES_DATABASE,
        )
