"""The Pod Security Standards "restricted" profile, as the API server's PodSecurity
admission checks it (https://kubernetes.io/docs/concepts/security/pod-security-standards/,
policy version "latest", Linux pods). :func:`restricted_violations` returns one line per
broken rule, in the admission plugin's words, or ``[]``; the simulated cluster refuses
pods in namespaces labelled ``pod-security.kubernetes.io/enforce: restricted`` with them.
"""

from __future__ import annotations

from typing import Any

ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
# restricted: every volume must be one of these
ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                   "projected", "secret"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}
RULES = ("privileged", "host namespaces", "hostPort", "hostPath volumes", "capabilities", "appArmor",
         "seLinuxOptions", "procMount", "seccompProfile", "sysctls", "restricted volume types",
         "allowPrivilegeEscalation", "runAsNonRoot", "runAsUser=0", "hostProcess")


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*(pod.get("initContainers") or []), *(pod.get("containers") or []),
            *(pod.get("ephemeralContainers") or [])]


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What in pod spec ``pod`` breaks the "restricted" profile (empty: nothing)."""
    found: list[str] = []
    pod_ctx = pod.get("securityContext") or {}
    containers = _containers(pod)

    def ctx(container: dict[str, Any]) -> dict[str, Any]:
        return container.get("securityContext") or {}

    def bad(rule: str, names: list[str], detail: str) -> None:
        if names:
            found.append(f"{rule} ({detail}: {', '.join(names)})")

    bad("privileged", [c["name"] for c in containers if ctx(c).get("privileged")], "containers must not set "
        "securityContext.privileged=true")
    hosts = [field for field in ("hostNetwork", "hostPID", "hostIPC") if pod.get(field)]
    if hosts:
        found.append(f"host namespaces ({'='.join(hosts)}=true)")
    bad("hostPort", [c["name"] for c in containers if any(p.get("hostPort") for p in c.get("ports") or [])],
        "containers must not set hostPort")
    bad("hostPath volumes", [v["name"] for v in pod.get("volumes") or [] if "hostPath" in v], "volumes")
    bad("unrestricted capabilities",
        [c["name"] for c in containers if "ALL" not in ((ctx(c).get("capabilities") or {}).get("drop") or [])],
        'containers must set securityContext.capabilities.drop=["ALL"]')
    bad("unrestricted capabilities",
        [c["name"] for c in containers
         if set((ctx(c).get("capabilities") or {}).get("add") or []) - {"NET_BIND_SERVICE"}],
        "containers must not add capabilities beyond NET_BIND_SERVICE")
    profiles = [pod_ctx.get("appArmorProfile") or {}, *(ctx(c).get("appArmorProfile") or {} for c in containers)]
    if any(p.get("type") == "Unconfined" for p in profiles):
        found.append("forbidden AppArmor profile (Unconfined)")
    selinux = [pod_ctx.get("seLinuxOptions") or {}, *(ctx(c).get("seLinuxOptions") or {} for c in containers)]
    if any(s.get("user") or s.get("role") or s.get("type") not in (None, "", "container_t", "container_init_t",
                                                                      "container_kvm_t", "container_engine_t")
           for s in selinux):
        found.append("seLinuxOptions (forbidden user, role or type)")
    bad("procMount", [c["name"] for c in containers if ctx(c).get("procMount") not in (None, "Default")],
        "containers must not set procMount other than Default")
    pod_seccomp = (pod_ctx.get("seccompProfile") or {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        found.append(f"seccompProfile (pod must not set seccompProfile.type={pod_seccomp})")
    unset = []
    for c in containers:
        kind = (ctx(c).get("seccompProfile") or {}).get("type")
        if kind not in (None, "RuntimeDefault", "Localhost") or (kind is None and pod_seccomp is None):
            unset.append(c["name"])
    bad("seccompProfile", unset, 'pod or containers must set securityContext.seccompProfile.type to '
        '"RuntimeDefault" or "Localhost"')
    bad("forbidden sysctls", [s.get("name", "") for s in pod_ctx.get("sysctls") or []
                              if s.get("name") not in SAFE_SYSCTLS], "sysctls")
    bad("restricted volume types",
        [v["name"] for v in pod.get("volumes") or [] if not (set(v) - {"name"}) <= ALLOWED_VOLUMES], "volumes")
    bad("allowPrivilegeEscalation != false",
        [c["name"] for c in containers if ctx(c).get("allowPrivilegeEscalation") is not False],
        "containers must set securityContext.allowPrivilegeEscalation=false")
    non_root = [c["name"] for c in containers if ctx(c).get("runAsNonRoot") is False
                or (ctx(c).get("runAsNonRoot") is None and pod_ctx.get("runAsNonRoot") is not True)]
    if pod_ctx.get("runAsNonRoot") is False:
        non_root = [c["name"] for c in containers if ctx(c).get("runAsNonRoot") is not True] or non_root
    bad("runAsNonRoot != true", non_root, "pod or containers must set securityContext.runAsNonRoot=true")
    if pod_ctx.get("runAsUser") == 0:
        found.append("runAsUser=0 (pod must not set runAsUser=0)")
    bad("runAsUser=0", [c["name"] for c in containers if ctx(c).get("runAsUser") == 0],
        "containers must not set runAsUser=0")
    windows = [pod_ctx.get("windowsOptions") or {}, *(ctx(c).get("windowsOptions") or {} for c in containers)]
    if any(w.get("hostProcess") for w in windows):
        found.append("hostProcess (windowsOptions.hostProcess=true)")
    return found
