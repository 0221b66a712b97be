"""The Vault texts a server cannot judge: where the annotations and files sit in the charts, the password copy's
shell command, and the port of vault-k8s that turns annotations into the agent's configuration.

What Vault itself makes of the policies, roles, secrets and rendered files is proven against a real server and the
real agent in ``tests/test_vault_server.py``.
"""

from __future__ import annotations

import os
import posixpath
import secrets
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.redis import redis_values
from components.wiring import redis_args, zitadel_args
from components.zitadel import zitadel_values
from stacks import names
from stacks.config import StackConfig
from testbed.openbao import openbao_server
from testbed.vault_agent import InjectorFlags, agent_config, ignored_annotations, injection, needed_version
from tests.conftest import record, stack_config

INJECT = "vault.hashicorp.com/"
SOURCE = "/vault/secrets/redis-password"
TARGET = "/opt/bitnami/redis/secrets/redis-password"


# --- where the charts take the annotations and files ----------------------------------------------------------------


def test_redis_annotations_survive_the_charts_tpl(cfg: StackConfig) -> None:
    replica = redis_values(redis_args(cfg))["replica"]
    # The chart runs pod annotations (and init containers) through Helm's tpl: no Go-template braces may reach it.
    assert not any("{{" in value for value in replica["podAnnotations"].values())
    assert "{{" not in str(replica["initContainers"])
    # The injector rejects pods without a service-account token.
    assert replica["automountServiceAccountToken"] is True


def test_every_injected_file_fails_on_a_missing_key(cfg: StackConfig) -> None:
    redis, zitadel = redis_values(redis_args(cfg)), zitadel_values(zitadel_args(cfg))
    for pod in (redis["replica"]["podAnnotations"], zitadel["podAnnotations"]):
        files = [k.removeprefix(INJECT + "agent-inject-template-") for k in pod if "agent-inject-template-" in k]
        assert files and all(pod[f"{INJECT}error-on-missing-key-{f}"] == "true" for f in files)


def test_password_copy_lands_where_the_chart_reads_it(cfg: StackConfig) -> None:
    values = redis_values(redis_args(cfg))
    assert values["auth"]["usePasswordFiles"] is True and values["auth"]["usePasswordFileFromSecret"] is False
    (copy,) = values["replica"]["initContainers"]
    assert copy["command"][:2] == ["/bin/sh", "-ec"]
    assert f"src={SOURCE}\n" in copy["command"][2] and f"dst={TARGET}\n" in copy["command"][2]
    assert copy["volumeMounts"] == [{"name": "redis-password", "mountPath": "/opt/bitnami/redis/secrets"}]
    assert copy["image"] == cfg.redis.images.redis.reference


def test_zitadel_pods_and_jobs_render_the_config_fragment(cfg: StackConfig) -> None:
    values = zitadel_values(zitadel_args(cfg))
    for where in (values["podAnnotations"], values["setupJob"]["podAnnotations"], values["initJob"]["podAnnotations"]):
        # A Job with the agent sidecar never completes.
        assert where[INJECT + "agent-pre-populate-only"] == "true"
        assert where[INJECT + f"agent-inject-file-{names.ZITADEL_INJECT_NAME}"] == "zitadel-secrets.yaml"
    # The chart passes --config /zitadel-secret-config-yaml/<key>; the key walks to the agent's file.
    zitadel = values["zitadel"]
    chart_mount = "/zitadel-secret-config-yaml"  # the chart's (tests/test_render.py checks it on the render)
    assert posixpath.normpath(f"{chart_mount}/{zitadel['configSecretKey']}") == "/vault/secrets/zitadel-secrets.yaml"
    assert zitadel["configSecretName"] == "zitadel-vault-config-anchor"
    # The chart needs a masterkeySecretName (its setup job's env); the masterkey itself comes as the agent's file.
    assert zitadel["masterkeySecretName"] == "zitadel-vault-config-anchor"
    assert "masterkey" not in zitadel or not zitadel.get("masterkey")
    for where in (values["podAnnotations"], values["setupJob"]["podAnnotations"]):
        assert where[INJECT + "agent-inject-secret-zitadel-masterkey"] == "secret/data/zitadel"


def test_auth_path_follows_the_stack(cfg: StackConfig) -> None:
    moved = cfg.model_copy(update={"vault": cfg.vault.model_copy(update={"kubernetes_auth_path": "k8s-prod"})})
    assert redis_values(redis_args(moved))["replica"]["podAnnotations"][INJECT + "auth-path"] == "auth/k8s-prod"
    assert zitadel_values(zitadel_args(moved))["podAnnotations"][INJECT + "auth-path"] == "auth/k8s-prod"


def test_a_managed_kv_mount_comes_before_the_secrets() -> None:
    """``vault.manageKvMount`` (off in both stacks: a dev-mode Vault has ``secret/``) for a Vault without one."""
    assert record("dev").by_type("vault:index/mount:Mount") == []
    recording = record("dev", {"vault": {"address": stack_config("dev").vault.address, "manageKvMount": True}})
    (mount,) = recording.by_type("vault:index/mount:Mount")
    assert (mount.inputs["path"], mount.inputs["type"], mount.inputs["options"]) == ("secret", "kv", {"version": "2"})
    for secret in recording.by_type("vault:kv/secretV2:SecretV2"):
        assert mount.urn in secret.dependencies, secret.name


# --- the password copy, run by /bin/sh ------------------------------------------------------------------------------


def copy_container(stack: str) -> dict[str, Any]:
    container: dict[str, Any] = redis_values(redis_args(stack_config(stack)))["replica"]["initContainers"][0]
    return container


def copy_script(stack: str, source: Path, target: Path) -> list[str]:
    """The init container's command with its two path assignments, and nothing else, pointed at temporary files."""
    interpreter, flags, script = copy_container(stack)["command"]
    for assignment, replacement in ((f"src={SOURCE}", f"src={source}"), (f"dst={TARGET}", f"dst={target}")):
        assert script.count(assignment) == 1
        script = script.replace(assignment, replacement)
    assert SOURCE not in script and TARGET not in script
    return [interpreter, flags, script]


@pytest.fixture
def volume() -> Iterator[Path]:
    """A folder that plays both volumes: writable by everyone, like the chart's emptyDir for the pod's users."""
    folder = Path(tempfile.mkdtemp(prefix="copy-redis-password-"))
    folder.chmod(0o777)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def run_copy(stack: str, volume: Path, content: bytes | None) -> tuple[subprocess.CompletedProcess[str], Path]:
    """The command as the container runs it: /bin/sh, and as the container's user when the tests run as root."""
    source, target = volume / "rendered", volume / "copied"
    if content is not None:
        source.write_bytes(content)
        source.chmod(0o644)  # the agent's default mode
    command = copy_script(stack, source, target)
    assert shutil.which(command[0])
    user = copy_container(stack)["securityContext"]["runAsUser"] if os.geteuid() == 0 else None
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=10, check=False, user=user, group=user, extra_groups=[]
    )
    return done, target


def test_a_generated_password_is_copied_read_only(stack: str, volume: Path) -> None:
    password = b"aZ09" * 12  # 48 letters and digits, the shape of redis.passwordLength's default
    done, target = run_copy(stack, volume, password)
    assert done.returncode == 0, done.stderr
    assert target.read_bytes() == password
    assert stat.S_IMODE(target.stat().st_mode) == 0o400
    # A restarted pod runs its init containers again over its read-only copy in the same emptyDir.
    again, _ = run_copy(stack, volume, password[::-1])
    assert again.returncode == 0, again.stderr
    assert target.read_bytes() == password[::-1]


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b'[[- with secret "secret/data/redis" -]][[ .Data.data.password ]][[- end ]]', id="template"),
        pytest.param(b"<no value>", id="missing-key"),
        pytest.param(b"", id="empty"),
        pytest.param(None, id="no-file"),
        pytest.param(b"aZ09" * 12 + b"\n", id="trailing-newline"),
        pytest.param(b"aZ09" * 11, id="too-short"),
        pytest.param(b"aZ09" * 13, id="too-long"),
        pytest.param(b"aZ09" * 11 + b"aZ0-", id="other-character"),
        pytest.param(b"aZ09" * 11 + "aZ0é".encode(), id="non-ascii"),
    ],
)
def test_anything_but_a_password_stops_the_pod_and_is_not_copied(
    stack: str, volume: Path, content: bytes | None
) -> None:
    done, target = run_copy(stack, volume, content)
    assert done.returncode != 0
    assert not target.exists()
    # The message names the file (a missing one stops at cat under dash's -e), never its content.
    assert str(volume / "rendered") in done.stderr
    assert content is None or "not a 48-character password" in done.stderr
    assert content is None or not content.strip() or content.decode(errors="replace") not in done.stderr


def test_the_copy_follows_the_configured_length() -> None:
    cfg = stack_config("dev")
    longer = cfg.model_copy(update={"redis": cfg.redis.model_copy(update={"password_length": 64})})
    script = redis_values(redis_args(longer))["replica"]["initContainers"][0]["command"][2]
    assert "-ne 64 ]" in script and "-ne 48 ]" not in script


# --- the port of vault-k8s: its own tests' expectations (agent-inject/agent/config_test.go, v1.7.6) ----------------

#: basicAgentConfig(), annotations_test.go:24-44.
FLAGS = InjectorFlags(address="http://foobar:8200", auth_path="test")


def test_port_new_config_as_vault_k8s_tests_it() -> None:
    # config_test.go:16-190 (TestNewConfig), the cases the port covers.
    annotations = {
        f"{INJECT}service": "https://vault:8200",
        f"{INJECT}role": "foobar",
        f"{INJECT}agent-pre-populate": "true",
        f"{INJECT}agent-pre-populate-only": "true",
        f"{INJECT}secret-volume-path": "/vault/secrets",
        f"{INJECT}agent-inject-secret-foo": "db/creds/foo",
        f"{INJECT}agent-inject-template-foo": "template foo",
        f"{INJECT}agent-inject-secret-bar": "db/creds/bar",
        f"{INJECT}agent-inject-secret-different-path": "different-path",
        f"{INJECT}secret-volume-path-different-path": "/etc/container_environment",
        f"{INJECT}agent-inject-secret-with-file-template": "with-file-template",
        f"{INJECT}agent-inject-template-file-with-file-template": "/etc/file-template",
        f"{INJECT}agent-inject-template-just-template": "just-template1",
        f"{INJECT}secret-volume-path-just-template": "/custom/path",
        f"{INJECT}agent-inject-command-just-template": "/tmp/smth.sh",
        f"{INJECT}agent-inject-file-just-template": ".env",
        f"{INJECT}agent-inject-perms-just-template": "0600",
        f"{INJECT}agent-inject-template-file-just-template-file": "just-template-file",
        f"{INJECT}agent-inject-command-bar": "pkill -HUP app",
        f"{INJECT}agent-inject-secret-baz": "db/creds/baz",
        f"{INJECT}agent-inject-template-baz": '[[ with secret "db/creds/baz" ]][[ end ]]',
        f"{INJECT}agent-template-left-delim-baz": "[[",
        f"{INJECT}agent-template-right-delim-baz": "]]",
        f"{INJECT}agent-cache-enable": "true",
    }
    config = agent_config(annotations, FLAGS, init=True)
    assert config["exit_after_auth"] is True
    assert config["auto_auth"]["method"]["config"]["role"] == "foobar"
    assert config["auto_auth"]["method"]["type"] == "kubernetes"
    assert config["auto_auth"]["method"]["mount_path"] == "test"
    assert "listener" not in config and "cache" not in config
    by_destination = {t["destination"]: t for t in config["template"]}
    assert len(config["template"]) == 7
    assert by_destination["/vault/secrets/foo"]["contents"] == "template foo"
    assert (
        by_destination["/vault/secrets/foo"]["left_delimiter"],
        by_destination["/vault/secrets/foo"]["right_delimiter"],
    ) == ("{{", "}}")
    assert 'with secret "db/creds/bar"' in by_destination["/vault/secrets/bar"]["contents"]
    assert by_destination["/vault/secrets/bar"]["command"] == "pkill -HUP app"
    assert "/etc/container_environment/different-path" in by_destination
    assert by_destination["/vault/secrets/with-file-template"]["source"] == "/etc/file-template"
    assert "contents" not in by_destination["/vault/secrets/with-file-template"]
    env = by_destination["/custom/path/.env"]
    assert (env["contents"], env["perms"], env["command"]) == ("just-template1", "0600", "/tmp/smth.sh")
    assert by_destination["/vault/secrets/just-template-file"]["source"] == "just-template-file"
    assert (
        by_destination["/vault/secrets/baz"]["left_delimiter"],
        by_destination["/vault/secrets/baz"]["right_delimiter"],
    ) == ("[[", "]]")


@pytest.mark.parametrize(
    ("extra", "destination"),
    [
        ({}, "/vault/secrets/foo"),
        ({"agent-inject-file-foo": "nested/foofile"}, "/vault/secrets/nested/foofile"),
        ({"agent-inject-file-foo": "/special/volume/foofile"}, "/vault/secrets/special/volume/foofile"),
        (
            {"agent-inject-file-foo": "/special/foofile", "secret-volume-path": "/new/mount/path"},
            "/new/mount/path/special/foofile",
        ),
        (
            {"agent-inject-file-foo": "nested/foofile", "secret-volume-path-foo": "/new/mount/path"},
            "/new/mount/path/nested/foofile",
        ),
    ],
)
def test_port_file_path_and_name_as_vault_k8s_tests_it(extra: dict[str, str], destination: str) -> None:
    # config_test.go:192-278 (TestFilePathAndName)
    annotations = {f"{INJECT}agent-inject-secret-foo": "db/creds/foo"} | {INJECT + k: v for k, v in extra.items()}
    (template,) = agent_config(annotations, FLAGS)["template"]
    assert template["destination"] == destination


@pytest.mark.parametrize(("value", "expected"), [("true", True), (None, False), ("false", False)])
def test_port_error_on_missing_key_as_vault_k8s_tests_it(value: str | None, expected: bool) -> None:
    # config_test.go:367-426 (TestErrMissingKey)
    annotations = {f"{INJECT}agent-inject-secret-foo": "db/creds/foo"}
    if value is not None:
        annotations[f"{INJECT}error-on-missing-key-foo"] = value
    (template,) = agent_config(annotations, FLAGS)["template"]
    assert template.get("error_on_missing_key", False) is expected


def test_port_flags_an_annotation_the_injector_would_ignore() -> None:
    annotations = dict(redis_values(redis_args(stack_config("dev")))["replica"]["podAnnotations"])
    assert ignored_annotations(annotations) == []
    typo = {f"{INJECT}error-on-missing-keys-redis-password": "true", f"{INJECT}agent-inject-file-redis_password": "x"}
    assert ignored_annotations(annotations | typo) == sorted(typo)
    # An older injector than the one the delimiters need is caught too.
    assert needed_version(annotations) == (1, 5, 0)
    assert injection(annotations, FLAGS).init_first is True


def test_a_failed_dev_server_keeps_its_root_token_out_of_the_error(tmp_path: Path) -> None:
    # A stand-in for a `bao server -dev` that prints its banner, credentials included, then dies: the bed's error
    # must carry the log's diagnosis but neither the root token nor the unseal key.
    unseal_key = secrets.token_urlsafe(24)
    fake = tmp_path / "bao"
    fake.write_text(
        "#!/bin/sh\n"
        'for arg in "$@"; do case "$arg" in -dev-root-token-id=*) token="${arg#*=}";; esac; done\n'
        'echo "Unseal Key: ' + unseal_key + '"\n'
        'echo "Root Token: $token"\n'
        'echo "Error initializing listener of type tcp: address already in use (token $token)"\n'
        "exit 1\n"
    )
    fake.chmod(0o755)
    with pytest.raises(RuntimeError) as caught, openbao_server(tmp_path / "work", binary=fake, attempts=1):
        pass
    message = str(caught.value)
    assert "address already in use (token <root token>)" in message
    assert "Root Token" not in message and "Unseal Key" not in message and unseal_key not in message
    log = (tmp_path / "work" / "server-0.log").read_text()
    token = log.split("Root Token: ", 1)[1].split()[0]
    assert len(token) >= 24 and token not in message
