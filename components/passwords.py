"""The passwords the stack generates: letters and digits only, so URL-safe and as many bytes as characters."""

from __future__ import annotations

import string

import pulumi
import pulumi_random as random

#: What every generated password is drawn from (``RandomPassword`` with upper, lower, numeric and no special).
PASSWORD_ALPHABET = string.ascii_uppercase + string.ascii_lowercase + string.digits


def random_password(name: str, length: int, opts: pulumi.ResourceOptions | None = None) -> pulumi.Output[str]:
    """A new ``RandomPassword`` of ``length`` characters from ``PASSWORD_ALPHABET``, as a Pulumi secret."""
    password = random.RandomPassword(
        name, length=length, upper=True, lower=True, numeric=True, special=False, opts=opts
    )
    return pulumi.Output.secret(password.result)
