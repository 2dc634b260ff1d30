"""The simulated scheduler's rules: which node can take a pod (test code).

Nodes have labels, taints and a capacity (cpu, memory, extended resources such as
``nvidia.com/gpu``); a pod fits a node when its ``nodeSelector`` and required node
affinity match the node's labels, it tolerates the node's ``NoSchedule``/``NoExecute``
taints, and its requests fit beside those of the pods already bound there (requests
of extended resources default to their limits, as Kubernetes does). The reasons a node
is refused are counted as the real scheduler words them in ``FailedScheduling``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

QUANTITY_RESOURCES = ("cpu", "memory")


def node(name: str, labels: dict[str, str] | None = None, taints: list[dict[str, str]] | None = None,
         cpu: float = 2.0, memory: float = 8 * 2**30, extra: dict[str, float] | None = None) -> dict[str, Any]:
    """A ``v1`` Node object as the simulator keeps it."""
    capacity = {"cpu": str(cpu), "memory": str(int(memory)), "pods": "110"}
    capacity.update({resource: str(int(count)) for resource, count in (extra or {}).items()})
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": {"taints": list(taints or [])} if taints else {},
        "status": {"capacity": capacity, "allocatable": dict(capacity),
                   "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]},
    }


def requests_of(pod: dict[str, Any], parse: Any) -> dict[str, float]:
    total: Counter[str] = Counter()
    for container in pod["spec"].get("containers") or []:
        resources = container.get("resources") or {}
        limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
        for resource, value in {**{k: v for k, v in limits.items() if k not in QUANTITY_RESOURCES},
                                **requests}.items():
            total[resource] += parse(value)
    return dict(total)


def _expression(expression: dict[str, Any], labels: dict[str, str]) -> bool:
    key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
    if operator == "In":
        return labels.get(key) in values
    if operator == "NotIn":
        return labels.get(key) not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    return False


def _affinity_matches(pod: dict[str, Any], labels: dict[str, str]) -> bool:
    required = (((pod["spec"].get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms") or []
    return not terms or any(all(_expression(e, labels) for e in term.get("matchExpressions") or [])
                            for term in terms)


def _tolerates(pod: dict[str, Any], taint: dict[str, str]) -> bool:
    for toleration in pod["spec"].get("tolerations") or []:
        if toleration.get("effect") not in (None, "", taint.get("effect")):
            continue
        if toleration.get("operator") == "Exists" and toleration.get("key") in (None, "", taint["key"]):
            return True
        if toleration.get("key") == taint["key"] and toleration.get("value", "") == taint.get("value", ""):
            return True
    return False


def refusal(pod: dict[str, Any], candidate: dict[str, Any], used: dict[str, float], parse: Any) -> str | None:
    """Why ``candidate`` cannot take ``pod`` (its bound pods use ``used``), or None."""
    labels = candidate["metadata"].get("labels") or {}
    selector = pod["spec"].get("nodeSelector") or {}
    if any(labels.get(key) != value for key, value in selector.items()) or not _affinity_matches(pod, labels):
        return "node(s) didn't match Pod's node affinity/selector"
    for taint in (candidate.get("spec") or {}).get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not _tolerates(pod, taint):
            return f"node(s) had untolerated taint {{{taint['key']}: {taint.get('value', '')}}}"
    allocatable = candidate["status"]["allocatable"]
    for resource, amount in requests_of(pod, parse).items():
        if amount and used.get(resource, 0.0) + amount > parse(allocatable.get(resource, "0")):
            return f"Insufficient {resource}"
    return None


def failed_scheduling_message(reasons: list[str], nodes: int) -> str:
    counted = Counter(reasons)
    parts = ", ".join(f"{count} {reason}" for reason, count in sorted(counted.items()))
    return f"0/{nodes} nodes are available: {parts}."
