"""The simulated cluster's object store: resourceVersions, watch history, selectors.

Every object carries server-set ``uid``, ``resourceVersion`` and ``creationTimestamp``.
Changes are kept in a bounded history so a watch can resume from a resourceVersion;
asking for one older than the history answers 410 Expired, as etcd compaction does.
"""

from __future__ import annotations

import asyncio
import copy
import re
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

HISTORY = 2000


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Expired(Exception):
    pass


class Store:
    def __init__(self, validate: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.version = 1
        self.objects: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}  # (kind, ns) -> name -> obj
        self.history: deque[tuple[int, str, str, str, dict[str, Any]]] = deque(maxlen=HISTORY)
        self.oldest = 1
        self.watchers: set[asyncio.Queue[tuple[int, str, str, str, dict[str, Any]]]] = set()
        self.validate = validate

    def bucket(self, kind: str, namespace: str) -> dict[str, dict[str, Any]]:
        return self.objects.setdefault((kind, namespace), {})

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.bucket(kind, namespace).get(name)

    def items(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        return list(self.bucket(kind, namespace).values())

    def _publish(self, kind: str, namespace: str, event: str, obj: dict[str, Any]) -> None:
        if self.validate is not None and event != "DELETED":
            self.validate(obj)
        if len(self.history) == self.history.maxlen:
            self.oldest = self.history[0][0] + 1
        entry = (self.version, kind, namespace, event, copy.deepcopy(obj))
        self.history.append(entry)
        for queue in self.watchers:
            queue.put_nowait(entry)

    def create(self, kind: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        meta.update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=now())
        self.version += 1
        meta["resourceVersion"] = str(self.version)
        self.bucket(kind, namespace)[meta["name"]] = obj
        self._publish(kind, namespace, "ADDED", obj)
        return obj

    def update(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        if meta["name"] not in self.bucket(kind, meta["namespace"]):
            return obj  # deleted meanwhile
        self.version += 1
        meta["resourceVersion"] = str(self.version)
        self._publish(kind, meta["namespace"], "MODIFIED", obj)
        return obj

    def remove(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        if self.bucket(kind, meta["namespace"]).pop(meta["name"], None) is None:
            return
        self.version += 1
        meta["resourceVersion"] = str(self.version)
        self._publish(kind, meta["namespace"], "DELETED", obj)

    def compact(self) -> None:
        """Forget the history (a test's way to make the next resume get 410)."""
        self.history.clear()
        self.oldest = self.version + 1

    def drop_watches(self) -> None:
        """End every open watch, as an API server restart or a load balancer would."""
        for queue in self.watchers:
            queue.put_nowait(None)  # type: ignore[arg-type]

    def since(self, version: int) -> list[tuple[int, str, str, str, dict[str, Any]]]:
        if version + 1 < self.oldest:
            raise Expired
        return [entry for entry in self.history if entry[0] > version]


# --- selectors -------------------------------------------------------------------------

_SET = re.compile(r"^\s*([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current)
    return parts


def label_match(selector: str | None, labels: dict[str, str]) -> bool:
    """Kubernetes label selector syntax: ``=``, ``==``, ``!=``, ``in``, ``notin``, ``key``, ``!key``."""
    for term in _split(selector or ""):
        term = term.strip()
        if match := _SET.match(term):
            name, op, values = match.groups()
            options = {value.strip() for value in values.split(",")}
            if (labels.get(name) in options) != (op == "in") or (op == "in" and name not in labels):
                return False
        elif "!=" in term:
            name, value = (part.strip() for part in term.split("!=", 1))
            if labels.get(name) == value:
                return False
        elif "=" in term:
            name, value = (part.strip() for part in term.replace("==", "=").split("=", 1))
            if labels.get(name) != value:
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


def field_match(selector: str | None, obj: dict[str, Any]) -> bool:
    """Field selectors: dotted paths with ``=``, ``==`` or ``!=``."""
    for term in _split(selector or ""):
        negate = "!=" in term
        path, value = (part.strip() for part in term.replace("!=", "=").replace("==", "=").split("=", 1))
        current: Any = obj
        for part in path.split("."):
            current = current.get(part) if isinstance(current, dict) else None
        if (str(current if current is not None else "") == value) == negate:
            return False
    return True
