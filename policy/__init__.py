"""The identity tier's CrossGuard policy pack (``pulumi preview --policy-pack policy``)."""
