"""The Pod Security Standard "restricted" (which includes "baseline") as checks over a pod template.

Written from the published standard (kubernetes.io/docs/concepts/security/pod-security-standards) and checked
against the admission controller's own checks (kubernetes/pod-security-admission, ``policy/check_*.go``), one
function per control, named after the controller's check ID. A pod passes when no check reports a violation.

The namespaces pin ``enforce`` to v1.30 and let ``audit``/``warn`` follow the latest version, so a pod must pass
both: every check below is the stricter of the two (lists of allowed values are the ones both versions allow).
The user-namespace relaxations (``hostUsers: false``) are not modelled: none of the program's pods uses them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

Pod = Mapping[str, Any]  # a pod template: {"metadata": ..., "spec": ...}


@dataclass(frozen=True)
class Violation:
    check: str
    pod: str
    #: ``None`` for a pod-level field; init containers are named ``init:<name>``.
    container: str | None
    detail: str

    def __str__(self) -> str:
        return f"{self.pod}: {self.container or '(pod)'}: {self.check}: {self.detail}"


#: Capabilities baseline lets a container add (the container runtime's default set).
BASELINE_CAPABILITIES: Final = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
RESTRICTED_CAPABILITIES: Final = frozenset({"NET_BIND_SERVICE"})
#: The inline volume sources restricted allows (``image`` too since v1.33, not at the pinned v1.30).
ALLOWED_VOLUME_TYPES: Final = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)
#: Safe sysctls at v1.29..v1.31 (later versions add tcp_rmem, tcp_wmem and more).
SAFE_SYSCTLS: Final = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
#: SELinux types baseline allows (v1.31 adds container_engine_t).
SELINUX_TYPES: Final = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})
SECCOMP_TYPES: Final = frozenset({"RuntimeDefault", "Localhost"})
APPARMOR_TYPES: Final = frozenset({"RuntimeDefault", "Localhost"})
APPARMOR_ANNOTATION: Final = "container.apparmor.security.beta.kubernetes.io/"


# --- walking a pod -------------------------------------------------------------------------------------------------


def _spec(pod: Pod) -> Mapping[str, Any]:
    return pod.get("spec") or {}


def _pod_context(pod: Pod) -> Mapping[str, Any]:
    return _spec(pod).get("securityContext") or {}


def containers(pod: Pod) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """``(name, container)`` for init, regular and ephemeral containers (init ones named ``init:<name>``)."""
    spec = _spec(pod)
    for prefix, key in (("init:", "initContainers"), ("", "containers"), ("ephemeral:", "ephemeralContainers")):
        for container in spec.get(key) or []:
            yield f"{prefix}{container.get('name', '?')}", container


def _context(container: Mapping[str, Any]) -> Mapping[str, Any]:
    return container.get("securityContext") or {}


def _contexts(pod: Pod) -> Iterator[tuple[str | None, Mapping[str, Any]]]:
    """The pod's security context (container ``None``), then each container's."""
    yield None, _pod_context(pod)
    for name, container in containers(pod):
        yield name, _context(container)


Check = Callable[[str, Pod], Iterator[Violation]]


# --- baseline ------------------------------------------------------------------------------------------------------


def host_process(label: str, pod: Pod) -> Iterator[Violation]:
    for name, context in _contexts(pod):
        if (context.get("windowsOptions") or {}).get("hostProcess") is True:
            yield Violation("hostProcess", label, name, "windowsOptions.hostProcess must be unset or false")


def host_namespaces(label: str, pod: Pod) -> Iterator[Violation]:
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if _spec(pod).get(field) is True:
            yield Violation("hostNamespaces", label, None, f"{field} must be unset or false")


def privileged(label: str, pod: Pod) -> Iterator[Violation]:
    for name, container in containers(pod):
        if _context(container).get("privileged") is True:
            yield Violation("privileged", label, name, "privileged must be unset or false")


def host_path_volumes(label: str, pod: Pod) -> Iterator[Violation]:
    for volume in _spec(pod).get("volumes") or []:
        if volume.get("hostPath") is not None:
            yield Violation("hostPathVolumes", label, None, f"volume {volume.get('name')!r} is a hostPath")


def host_ports(label: str, pod: Pod) -> Iterator[Violation]:
    for name, container in containers(pod):
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                yield Violation("hostPorts", label, name, f"hostPort {port['hostPort']} must be unset or 0")


def app_armor_profile(label: str, pod: Pod) -> Iterator[Violation]:
    for key, value in ((pod.get("metadata") or {}).get("annotations") or {}).items():
        if (
            key.startswith(APPARMOR_ANNOTATION)
            and value not in ("", "runtime/default")
            and not value.startswith("localhost/")
        ):
            yield Violation("appArmorProfile", label, key[len(APPARMOR_ANNOTATION) :], f"annotation {value!r}")
    for name, context in _contexts(pod):
        profile = context.get("appArmorProfile")
        if profile is not None and profile.get("type") not in APPARMOR_TYPES:
            yield Violation("appArmorProfile", label, name, f"appArmorProfile.type {profile.get('type')!r}")


def se_linux_options(label: str, pod: Pod) -> Iterator[Violation]:
    for name, context in _contexts(pod):
        options = context.get("seLinuxOptions") or {}
        if options.get("type", "") not in SELINUX_TYPES:
            yield Violation("seLinuxOptions", label, name, f"seLinuxOptions.type {options['type']!r}")
        for field in ("user", "role"):
            if options.get(field):
                yield Violation("seLinuxOptions", label, name, f"seLinuxOptions.{field} must be unset")


def proc_mount(label: str, pod: Pod) -> Iterator[Violation]:
    for name, container in containers(pod):
        mount = _context(container).get("procMount")
        if mount not in (None, "Default"):
            yield Violation("procMount", label, name, f"procMount {mount!r} must be unset or Default")


def sysctls(label: str, pod: Pod) -> Iterator[Violation]:
    for sysctl in _pod_context(pod).get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            yield Violation("sysctls", label, None, f"sysctl {sysctl.get('name')!r} is not in the safe set")


_PROBES: Final = ("livenessProbe", "readinessProbe", "startupProbe")
_LIFECYCLE: Final = ("postStart", "preStop")


def host_probes_and_host_lifecycle(label: str, pod: Pod) -> Iterator[Violation]:
    for name, container in containers(pod):
        handlers = [(probe, container.get(probe) or {}) for probe in _PROBES]
        handlers += [(f"lifecycle.{hook}", (container.get("lifecycle") or {}).get(hook) or {}) for hook in _LIFECYCLE]
        for where, handler in handlers:
            for kind in ("httpGet", "tcpSocket"):
                if (handler.get(kind) or {}).get("host"):
                    yield Violation("hostProbesAndHostLifecycle", label, name, f"{where}.{kind}.host must be unset")


# --- restricted ----------------------------------------------------------------------------------------------------


def restricted_volumes(label: str, pod: Pod) -> Iterator[Violation]:
    for volume in _spec(pod).get("volumes") or []:
        sources = set(volume) - {"name"}
        if not sources <= ALLOWED_VOLUME_TYPES:
            kinds = ", ".join(sorted(sources - ALLOWED_VOLUME_TYPES))
            yield Violation("restrictedVolumes", label, None, f"volume {volume.get('name')!r} uses {kinds}")


def allow_privilege_escalation(label: str, pod: Pod) -> Iterator[Violation]:
    for name, container in containers(pod):
        if _context(container).get("allowPrivilegeEscalation") is not False:
            yield Violation("allowPrivilegeEscalation", label, name, "allowPrivilegeEscalation must be false")


def run_as_non_root(label: str, pod: Pod) -> Iterator[Violation]:
    pod_value = _pod_context(pod).get("runAsNonRoot")
    if pod_value is False:
        yield Violation("runAsNonRoot", label, None, "runAsNonRoot must not be false")
    for name, container in containers(pod):
        value = _context(container).get("runAsNonRoot")
        if value is False or (value is None and pod_value is not True):
            yield Violation("runAsNonRoot", label, name, "runAsNonRoot must be true (here or on the pod)")


def run_as_user(label: str, pod: Pod) -> Iterator[Violation]:
    for name, context in _contexts(pod):
        if context.get("runAsUser") == 0:
            yield Violation("runAsUser", label, name, "runAsUser must not be 0")


def seccomp_profile(label: str, pod: Pod) -> Iterator[Violation]:
    pod_profile = _pod_context(pod).get("seccompProfile")
    pod_set = pod_profile is not None and pod_profile.get("type") in SECCOMP_TYPES
    if pod_profile is not None and not pod_set:
        yield Violation("seccompProfile", label, None, f"seccompProfile.type {pod_profile.get('type')!r}")
    for name, container in containers(pod):
        profile = _context(container).get("seccompProfile")
        if profile is not None and profile.get("type") not in SECCOMP_TYPES:
            yield Violation("seccompProfile", label, name, f"seccompProfile.type {profile.get('type')!r}")
        elif profile is None and not pod_set:
            yield Violation("seccompProfile", label, name, "RuntimeDefault or Localhost, here or on the pod")


def capabilities(label: str, pod: Pod) -> Iterator[Violation]:
    for name, container in containers(pod):
        caps = _context(container).get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            yield Violation("capabilities", label, name, "capabilities.drop must include ALL")
        added = set(caps.get("add") or []) - RESTRICTED_CAPABILITIES
        if added:
            detail = f"may add only NET_BIND_SERVICE, not {', '.join(sorted(added))}"
            if not added <= BASELINE_CAPABILITIES:
                detail += " (beyond baseline's default set too)"
            yield Violation("capabilities", label, name, detail)


#: Every control of the restricted level. Where restricted tightens a baseline control (capabilities, seccomp,
#: volumes) the restricted check replaces the baseline one, as in the admission controller.
CHECKS: Final[dict[str, Check]] = {
    "hostProcess": host_process,
    "hostNamespaces": host_namespaces,
    "privileged": privileged,
    "hostPathVolumes": host_path_volumes,
    "hostPorts": host_ports,
    "appArmorProfile": app_armor_profile,
    "seLinuxOptions": se_linux_options,
    "procMount": proc_mount,
    "sysctls": sysctls,
    "hostProbesAndHostLifecycle": host_probes_and_host_lifecycle,
    "restrictedVolumes": restricted_volumes,
    "allowPrivilegeEscalation": allow_privilege_escalation,
    "runAsNonRoot": run_as_non_root,
    "runAsUser": run_as_user,
    "seccompProfile": seccomp_profile,
    "capabilities": capabilities,
}


def violations(label: str, pod: Pod) -> list[Violation]:
    """Every way ``pod`` (a pod template named ``label``) breaks Pod Security "restricted"."""
    return [violation for check in CHECKS.values() for violation in check(label, pod)]
