"""The taxonomy: every entry's ZITADEL types, unknown types, and the payload allow-list (no secret passes)."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest

from relay.events import UnusableEventError, entry_fields, parse_event
from relay.taxonomy import ALLOWED_FIELDS, TAXONOMY, classify, filter_payload

# Written from the README's taxonomy table: ZITADEL type → (taxonomy name, priority).
EXPECTED: dict[str, tuple[str, str]] = {
    # auth.login
    "user.human.password.check.succeeded": ("auth.login", "high"),
    "user.human.externallogin.check.succeeded": ("auth.login", "high"),
    "user.human.passwordless.token.check.succeeded": ("auth.login", "high"),
    "user.human.mfa.otp.check.succeeded": ("auth.login", "high"),
    "user.human.mfa.otp.sms.check.succeeded": ("auth.login", "high"),
    "user.human.mfa.otp.email.check.succeeded": ("auth.login", "high"),
    "user.human.mfa.u2f.token.check.succeeded": ("auth.login", "high"),
    "user.human.mfa.recoverycode.check.succeeded": ("auth.login", "high"),
    "user.password.check.succeeded": ("auth.login", "high"),
    "user.mfa.otp.check.succeeded": ("auth.login", "high"),
    # auth.failed
    "user.human.password.check.failed": ("auth.failed", "high"),
    "user.human.passwordless.token.check.failed": ("auth.failed", "high"),
    "user.human.mfa.otp.check.failed": ("auth.failed", "high"),
    "user.human.mfa.otp.sms.check.failed": ("auth.failed", "high"),
    "user.human.mfa.otp.email.check.failed": ("auth.failed", "high"),
    "user.human.mfa.u2f.token.check.failed": ("auth.failed", "high"),
    "user.human.mfa.recoverycode.check.failed": ("auth.failed", "high"),
    "user.human.initialization.check.failed": ("auth.failed", "high"),
    "auth_request.failed": ("auth.failed", "high"),
    "user.password.check.failed": ("auth.failed", "high"),
    "user.mfa.otp.check.failed": ("auth.failed", "high"),
    # auth.locked
    "user.locked": ("auth.locked", "high"),
    # auth.logout
    "user.human.signed.out": ("auth.logout", "high"),
    "user.signed.out": ("auth.logout", "high"),
    "session.terminated": ("auth.logout", "high"),
    "oidc_session.access_token.revoked": ("auth.logout", "high"),
    "oidc_session.refresh_token.revoked": ("auth.logout", "high"),
    "user.token.removed": ("auth.logout", "high"),
    "user.human.refresh.token.removed": ("auth.logout", "high"),
    # auth.token_issued
    "oidc_session.added": ("auth.token_issued", "high"),
    "user.token.added": ("auth.token_issued", "high"),
    "user.token.v2.added": ("auth.token_issued", "high"),
    "auth_request.succeeded": ("auth.token_issued", "high"),
    # auth.password_changed
    "user.human.password.changed": ("auth.password_changed", "high"),
    "user.password.changed": ("auth.password_changed", "high"),
    # auth.mfa_enabled
    "user.human.mfa.otp.verified": ("auth.mfa_enabled", "high"),
    "user.human.mfa.otp.sms.added": ("auth.mfa_enabled", "high"),
    "user.human.mfa.otp.email.added": ("auth.mfa_enabled", "high"),
    "user.human.mfa.u2f.token.verified": ("auth.mfa_enabled", "high"),
    "user.human.passwordless.token.verified": ("auth.mfa_enabled", "high"),
    "user.human.mfa.recoverycode.added": ("auth.mfa_enabled", "high"),
    "user.mfa.otp.verified": ("auth.mfa_enabled", "high"),
    # auth.mfa_disabled
    "user.human.mfa.otp.removed": ("auth.mfa_disabled", "high"),
    "user.human.mfa.otp.sms.removed": ("auth.mfa_disabled", "high"),
    "user.human.mfa.otp.email.removed": ("auth.mfa_disabled", "high"),
    "user.human.mfa.u2f.token.removed": ("auth.mfa_disabled", "high"),
    "user.human.passwordless.token.removed": ("auth.mfa_disabled", "high"),
    "user.human.mfa.recoverycode.removed": ("auth.mfa_disabled", "high"),
    "user.mfa.otp.removed": ("auth.mfa_disabled", "high"),
    # user.*
    "user.human.added": ("user.created", "normal"),
    "user.human.selfregistered": ("user.created", "normal"),
    "user.machine.added": ("user.created", "normal"),
    "user.added": ("user.created", "normal"),
    "user.selfregistered": ("user.created", "normal"),
    "user.human.profile.changed": ("user.updated", "normal"),
    "user.human.email.changed": ("user.updated", "normal"),
    "user.human.email.verified": ("user.updated", "normal"),
    "user.human.phone.changed": ("user.updated", "normal"),
    "user.human.phone.removed": ("user.updated", "normal"),
    "user.human.phone.verified": ("user.updated", "normal"),
    "user.human.address.changed": ("user.updated", "normal"),
    "user.human.avatar.added": ("user.updated", "normal"),
    "user.human.avatar.removed": ("user.updated", "normal"),
    "user.username.changed": ("user.updated", "normal"),
    "user.machine.changed": ("user.updated", "normal"),
    "user.unlocked": ("user.updated", "normal"),
    "user.deactivated": ("user.updated", "normal"),
    "user.reactivated": ("user.updated", "normal"),
    "user.domain.claimed": ("user.updated", "normal"),
    "user.metadata.set": ("user.updated", "normal"),
    "user.metadata.removed": ("user.updated", "normal"),
    "user.metadata.removed.all": ("user.updated", "normal"),
    "user.removed": ("user.deleted", "normal"),
    # org.*
    "org.added": ("org.created", "normal"),
    "org.changed": ("org.updated", "normal"),
    "org.deactivated": ("org.updated", "normal"),
    "org.reactivated": ("org.updated", "normal"),
    "org.domain.added": ("org.updated", "normal"),
    "org.domain.verified": ("org.updated", "normal"),
    "org.domain.primary.set": ("org.updated", "normal"),
    "org.domain.removed": ("org.updated", "normal"),
    "org.removed": ("org.deleted", "normal"),
    # project.*
    "project.added": ("project.created", "normal"),
    "project.changed": ("project.updated", "normal"),
    "project.deactivated": ("project.updated", "normal"),
    "project.reactivated": ("project.updated", "normal"),
    "project.removed": ("project.deleted", "normal"),
    # app.*
    "project.application.added": ("app.created", "normal"),
    "project.application.changed": ("app.updated", "normal"),
    "project.application.deactivated": ("app.updated", "normal"),
    "project.application.reactivated": ("app.updated", "normal"),
    "project.application.config.oidc.added": ("app.updated", "normal"),
    "project.application.config.api.added": ("app.updated", "normal"),
    "project.application.config.saml.added": ("app.updated", "normal"),
    "project.application.config.oidc.changed": ("app.updated", "normal"),
    "project.application.config.api.changed": ("app.updated", "normal"),
    "project.application.config.saml.changed": ("app.updated", "normal"),
    "project.application.config.oidc.secret.changed": ("app.updated", "normal"),
    "project.application.config.api.secret.changed": ("app.updated", "normal"),
    "project.application.removed": ("app.deleted", "normal"),
    # policy.* (by owner and kind)
    "org.policy.login.added": ("policy.created", "normal"),
    "org.policy.password.complexity.added": ("policy.created", "normal"),
    "org.policy.password.age.added": ("policy.created", "normal"),
    "org.policy.password.lockout.added": ("policy.created", "normal"),
    "org.policy.lockout.added": ("policy.created", "normal"),
    "org.policy.label.added": ("policy.created", "normal"),
    "org.policy.privacy.added": ("policy.created", "normal"),
    "org.policy.domain.added": ("policy.created", "normal"),
    "org.policy.notification.added": ("policy.created", "normal"),
    "org.policy.mail.template.added": ("policy.created", "normal"),
    "org.policy.mail.text.added": ("policy.created", "normal"),
    "instance.policy.login.added": ("policy.created", "normal"),
    "instance.policy.password.complexity.changed": ("policy.updated", "normal"),
    "org.policy.login.changed": ("policy.updated", "normal"),
    "org.policy.lockout.changed": ("policy.updated", "normal"),
    "org.policy.login.idpprovider.added": ("policy.updated", "normal"),
    "org.policy.login.idpprovider.removed": ("policy.updated", "normal"),
    "org.policy.login.idpprovider.cascade.removed": ("policy.updated", "normal"),
    "org.policy.login.second.factor.added": ("policy.updated", "normal"),
    "org.policy.login.second.factor.removed": ("policy.updated", "normal"),
    "org.policy.login.multi.factor.added": ("policy.updated", "normal"),
    "instance.policy.login.multi.factor.removed": ("policy.updated", "normal"),
    "org.policy.label.activated": ("policy.updated", "normal"),
    "org.policy.login.removed": ("policy.deleted", "normal"),
    "org.policy.privacy.removed": ("policy.deleted", "normal"),
    # role.*
    "project.role.added": ("role.created", "normal"),
    "project.role.changed": ("role.updated", "normal"),
    "project.role.removed": ("role.deleted", "normal"),
    "user.grant.added": ("role.assigned", "normal"),
    "user.grant.changed": ("role.assignment_changed", "normal"),
    "user.grant.deactivated": ("role.assignment_changed", "normal"),
    "user.grant.reactivated": ("role.assignment_changed", "normal"),
    "user.grant.removed": ("role.unassigned", "normal"),
    "user.grant.cascade.removed": ("role.unassigned", "normal"),
}

#: Real ZITADEL types deliberately outside the taxonomy (the README says why), and made-up ones.
UNCLASSIFIED = [
    "user.human.password.hash.updated",  # a rehash on login, not a change
    "user.human.mfa.otp.added",  # enrolment started, not yet usable
    "user.human.password.code.added",
    "session.added",
    "session.password.checked",  # written next to password.check.failed by one code path
    "org.policy.label.logo.added",
    "org.policy.login",
    "xorg.policy.login.added",
    "org.policy.login.added.x",
    "instance.added",
    "milestone.pushed",
    "user.human.added.v9",
    "project.application",
    "",
    "USER.HUMAN.ADDED",
]


@pytest.mark.parametrize(("event_type", "expected"), sorted(EXPECTED.items()))
def test_every_taxonomy_type(event_type: str, expected: tuple[str, str]) -> None:
    c = classify(event_type)
    assert (c.name, c.priority) == expected


@pytest.mark.parametrize("event_type", UNCLASSIFIED)
def test_unknown_types_are_unclassified_and_low(event_type: str) -> None:
    c = classify(event_type)
    assert (c.name, c.priority, c.event_class) == ("unclassified", "low", "none")


def test_the_expectations_cover_every_listed_type_and_every_name() -> None:
    listed = {t for entry in TAXONOMY for t in entry.types}
    assert listed <= set(EXPECTED)
    assert {entry.name for entry in TAXONOMY} == {name for name, _ in EXPECTED.values()}
    assert all(entry.rule for entry in TAXONOMY)


def test_priority_follows_the_class() -> None:
    """auth → high; user/org/project/app/policy/role → normal; the rest → low."""
    for entry in TAXONOMY:
        want = "high" if entry.name.startswith("auth.") else "normal"
        assert entry.priority == want, entry.name
        assert entry.event_class == entry.name.split(".")[0]


def raw_event(event_type: str, payload: Any = None, **overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "editor": {"userId": "200000000000000001", "displayName": "editor", "service": "Admin-API"},
        "aggregate": {"id": "300000000000000001", "type": {"type": "user"}, "resourceOwner": "100000000000000001"},
        "sequence": "7",
        "creationDate": "2026-03-23T10:00:00.123456Z",
        "type": {"type": event_type},
    }
    if payload is not None:
        event["payload"] = payload
    event.update(overrides)
    return event


def test_an_entry_carries_every_identifier() -> None:
    payload = {"userName": "ada", "email": "ada@example.com", "encodedHash": "$2a$14$abc", "changeRequired": True}
    priority, fields = entry_fields("id.example.com", parse_event(raw_event("user.human.added", payload)))
    assert priority == "normal"
    assert fields == {
        "taxonomy": "user.created",
        "type": "user.human.added",
        "instance": "id.example.com",
        "aggregate_type": "user",
        "aggregate_id": "300000000000000001",
        "resource_owner": "100000000000000001",
        "sequence": "7",
        "created_at": "2026-03-23T10:00:00.123456Z",
        "editor": "200000000000000001",
        "payload": '{"email":"ada@example.com","userName":"ada"}',
    }


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2026-03-23T10:00:00Z", "2026-03-23T10:00:00.000000Z"),
        ("2026-03-23T10:00:00.5Z", "2026-03-23T10:00:00.500000Z"),
        ("2026-03-23T10:00:00.123456789Z", "2026-03-23T10:00:00.123456Z"),
        ("2026-03-23T12:00:00.000001+02:00", "2026-03-23T10:00:00.000001Z"),
    ],
)
def test_creation_dates_are_normalised_to_microseconds_utc(stamp: str, expected: str) -> None:
    _, fields = entry_fields("i", parse_event(raw_event("org.added", creationDate=stamp)))
    assert fields["created_at"] == expected


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda e: e.pop("type"), "unclassifiable"),
        (lambda e: e.update(type={"type": ""}), "unclassifiable"),
        (lambda e: e.update(type="user.human.added"), "unclassifiable"),
        (lambda e: e["aggregate"].pop("id"), "unparseable"),
        (lambda e: e["aggregate"].update(type={}), "unparseable"),
        (lambda e: e.pop("aggregate"), "unparseable"),
        (lambda e: e.update(sequence="seven"), "unparseable"),
        (lambda e: e.pop("sequence"), "unparseable"),
        (lambda e: e.update(creationDate="yesterday"), "unparseable"),
        (lambda e: e.update(creationDate="2026-03-23T10:00:00"), "unparseable"),
        (lambda e: e.pop("creationDate"), "unparseable"),
    ],
)
def test_unusable_events_say_why(mutate: Any, reason: str) -> None:
    event = raw_event("user.human.added")
    mutate(event)
    with pytest.raises(UnusableEventError) as caught:
        parse_event(event)
    assert caught.value.reason == reason


def test_allow_list_keeps_scalars_and_scalar_lists_only() -> None:
    payload = {
        "roleKeys": ["admin", "viewer"],
        "key": "admin",
        "displayName": {"nested": "object"},
        "group": [{"x": 1}],
        "projectId": None,
        "secret": "s",
    }
    assert filter_payload("role", payload) == {"roleKeys": ["admin", "viewer"], "key": "admin", "projectId": None}
    assert filter_payload("none", {"name": "x"}) == {}
    assert filter_payload("user", "not an object") == {}


#: Field names that hold credentials somewhere in ZITADEL's events; no class may allow one.
SECRET_FIELD_NAMES = {
    "secret",
    "encodedHash",
    "hashedSecret",
    "clientSecret",
    "code",
    "codes",
    "otpSecret",
    "token",
    "tokenId",
    "tokenID",
    "refreshTokenID",
    "refreshTokenId",
    "privateKey",
    "password",
    "bindPassword",
    "signingKey",
    "challenge",
    "validationCode",
    "deviceCode",
    "userCode",
    "keyData",
    "value",
    "metadata",
    "certificate",
    "publicKey",
    "userAgent",
}


def test_no_class_allows_a_secret_field_name() -> None:
    for event_class, allowed in ALLOWED_FIELDS.items():
        assert not (allowed & SECRET_FIELD_NAMES), event_class


def crypto_value(secret: str) -> dict[str, Any]:
    """ZITADEL's ``crypto.CryptoValue`` as the Event API's Struct renders it."""
    return {"cryptoType": 0, "algorithm": "aes", "keyID": "eventKey", "crypted": secret}


#: ZITADEL's secret-bearing event types and the fields that carry the secret (``internal/repository/...`` of v4.13).
#: ``S`` stands for a fresh stand-in secret. Each is fed through classification and the allow-list.
SECRET_BEARING: list[tuple[str, dict[str, Any]]] = [
    ("user.human.added", {"userName": "u", "secret": "CV", "encodedHash": "S", "changeRequired": True}),
    ("user.human.selfregistered", {"userName": "u", "secret": "CV", "encodedHash": "S"}),
    ("user.added", {"userName": "u", "secret": "CV", "encodedHash": "S"}),
    ("user.human.password.changed", {"secret": "CV", "encodedHash": "S", "userAgentID": "ua", "triggerOrigin": "o"}),
    ("user.password.changed", {"secret": "CV", "encodedHash": "S"}),
    ("user.human.password.hash.updated", {"encodedHash": "S"}),
    ("user.human.password.code.added", {"code": "CV", "expiry": 3600, "urlTemplate": "S"}),
    ("user.human.initialization.code.added", {"code": "CV", "expiry": 3600, "authRequestID": "S"}),
    ("user.human.email.code.added", {"code": "CV", "expiry": 3600, "urlTemplate": "S"}),
    ("user.human.phone.code.added", {"code": "CV", "expiry": 3600}),
    ("user.human.invite.code.added", {"code": "CV", "urlTemplate": "S", "applicationName": "a"}),
    ("user.human.passwordless.initialization.code.added", {"id": "i", "code": "CV", "expiry": 3600}),
    ("user.human.passwordless.initialization.code.requested", {"id": "i", "code": "CV", "urlTemplate": "S"}),
    ("user.human.mfa.otp.added", {"otpSecret": "CV"}),
    ("user.human.mfa.otp.verified", {"userAgentID": "ua", "otpSecret": "CV"}),
    ("user.human.mfa.otp.sms.code.added", {"code": "CV", "expiry": 300, "generatorID": "S"}),
    ("user.human.mfa.otp.email.code.added", {"code": "CV", "expiry": 300, "urlTemplate": "S"}),
    ("user.human.mfa.otp.check.succeeded", {"userAgentID": "ua", "code": "S"}),
    ("user.human.mfa.u2f.token.added", {"webAuthNTokenID": "t", "challenge": "S", "rpID": "r"}),
    ("user.human.mfa.u2f.token.verified", {"webAuthNTokenID": "t", "publicKey": "S", "keyId": "S"}),
    ("user.human.passwordless.token.added", {"webAuthNTokenID": "t", "challenge": "S"}),
    ("user.human.passwordless.token.verified", {"webAuthNTokenID": "t", "publicKey": "S", "keyId": "S"}),
    ("user.human.mfa.recoverycode.added", {"codes": ["S", "S"]}),
    ("user.human.mfa.recoverycode.check.succeeded", {"codeIndex": 1, "code": "S"}),
    ("user.human.refresh.token.added", {"tokenId": "S", "clientId": "c", "userAgentId": "ua"}),
    ("user.human.refresh.token.renewed", {"tokenId": "S", "refreshTokenId": "S"}),
    ("user.token.added", {"tokenId": "S", "applicationId": "a", "refreshTokenID": "S"}),
    ("user.token.v2.added", {"tokenID": "S"}),
    ("user.personal.access.token.added", {"tokenId": "S", "expiration": "2030-01-01T00:00:00Z"}),
    ("user.machine.secret.set", {"clientSecret": "CV", "hashedSecret": "S"}),
    ("user.machine.secret.hash.updated", {"hashedSecret": "S"}),
    ("user.machine.key.added", {"keyId": "k", "type": 1, "publicKey": "S"}),
    ("user.metadata.set", {"key": "k", "value": "S"}),
    ("session.added", {"userAgent": {"fingerprintID": "S", "ip": "S", "header": {"cookie": ["S"]}}}),
    ("session.token.set", {"tokenID": "S"}),
    ("session.webAuthN.challenged", {"challenge": "S", "rpid": "r"}),
    ("session.otp.sms.challenged", {"code": "CV", "expiry": 300, "codeReturned": True}),
    ("session.otp.email.challenged", {"code": "CV", "expiry": 300, "urlTmpl": "S"}),
    ("session.metadata.set", {"metadata": {"k": "S"}}),
    ("oidc_session.added", {"userID": "u", "sessionID": "s", "clientID": "c", "nonce": "S"}),
    ("oidc_session.access_token.added", {"id": "S", "scope": ["openid"]}),
    ("oidc_session.refresh_token.added", {"id": "S"}),
    ("oidc_session.refresh_token.renewed", {"id": "S"}),
    ("auth_request.added", {"clientID": "c", "codeChallenge": {"challenge": "S"}, "nonce": "S", "state": "S"}),
    ("auth_request.code.added", {"code": "S"}),
    ("device.authorization.added", {"deviceCode": "S", "userCode": "S", "clientID": "c"}),
    (
        "project.application.config.oidc.added",
        {"appId": "a", "clientId": "c", "clientSecret": "CV", "hashedSecret": "S"},
    ),
    ("project.application.config.oidc.secret.changed", {"appId": "a", "clientSecret": "CV", "hashedSecret": "S"}),
    ("project.application.config.oidc.secret.hash.updated", {"appId": "a", "hashedSecret": "S"}),
    (
        "project.application.config.api.added",
        {"appId": "a", "clientId": "c", "clientSecret": "CV", "hashedSecret": "S"},
    ),
    ("project.application.config.api.secret.changed", {"appId": "a", "clientSecret": "CV", "hashedSecret": "S"}),
    ("project.application.config.saml.added", {"appId": "a", "metadata": "S", "metadataUrl": "u"}),
    ("project.application.key.added", {"applicationId": "a", "publicKey": "S", "keyId": "k"}),
    ("instance.idp.oauth.added", {"id": "i", "clientId": "c", "clientSecret": "CV"}),
    ("org.idp.oidc.added", {"id": "i", "clientId": "c", "clientSecret": "CV"}),
    ("org.idp.ldap.v2.added", {"id": "i", "bindDN": "d", "bindPassword": "CV"}),
    ("org.idp.saml.added", {"id": "i", "key": "CV", "certificate": "S", "metadata": "S"}),
    ("instance.idp.apple.added", {"id": "i", "privateKey": "CV"}),
    ("instance.idp.config.oidc.added", {"clientId": "c", "clientSecret": "CV"}),
    ("instance.smtp.config.added", {"host": "h", "user": "u", "password": "CV"}),
    ("instance.smtp.config.password.changed", {"password": "CV"}),
    ("instance.smtp.config.http.added", {"endpoint": "e", "signingKey": "CV"}),
    ("instance.sms.configtwilio.added", {"sid": "s", "token": "CV"}),
    ("instance.sms.configtwilio.token.changed", {"token": "CV"}),
    ("key_pair.added", {"usage": 0, "algorithm": "RS256", "privateKey": {"key": "CV"}, "publicKey": {"key": "S"}}),
    ("web_key.added", {"privateKey": "CV", "publicKey": "S"}),
    ("target.added", {"name": "n", "endpoint": "e", "signingKey": "CV"}),
    ("target.changed", {"signingKey": "CV"}),
    ("org.domain.verification.added", {"domain": "d", "validationType": 1, "validationCode": "CV"}),
    ("instance.domain.verification.added", {"domain": "d", "validationCode": "CV"}),
]


def _fill(value: Any, secret: str) -> Any:
    """Put the stand-in secret where the table says ``S`` (plain) or ``CV`` (a crypto value object)."""
    if value == "S":
        return secret
    if value == "CV":
        return crypto_value(secret)
    if isinstance(value, dict):
        return {k: _fill(v, secret) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, secret) for v in value]
    return value


def secret_bearing_events(secret: str) -> list[dict[str, Any]]:
    return [raw_event(t, _fill(p, secret)) for t, p in SECRET_BEARING]


@pytest.mark.parametrize(("event_type", "payload"), SECRET_BEARING, ids=[t for t, _ in SECRET_BEARING])
def test_no_secret_passes_the_allow_list(event_type: str, payload: dict[str, Any]) -> None:
    secret = secrets.token_hex(16)
    raw = raw_event(event_type, _fill(payload, secret))
    assert secret in json.dumps(raw)  # the case really carries it
    _, fields = entry_fields("i", parse_event(raw))
    assert secret not in json.dumps(fields)


def test_a_broken_allow_list_would_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: allow one secret field and the stand-in secret reaches the entry."""
    secret = secrets.token_hex(16)
    raw = raw_event("user.human.password.changed", {"encodedHash": secret})
    monkeypatch.setitem(ALLOWED_FIELDS, "auth", ALLOWED_FIELDS["auth"] | {"encodedHash"})
    _, fields = entry_fields("i", parse_event(raw))
    assert secret in fields["payload"]
