"""Resource settings and service accounts of content: the rules, in one place.

Content carries ``cpu_request`` and ``cpu_limit`` (cores, fractional),
``memory_request`` and ``memory_limit`` (bytes) and ``service_account_name``;
``null`` means the server default. Everything here is a pure function of those
values and a :class:`ResourcePolicy` (the server's defaults and maxima, from the
``[scheduler]`` settings: ``Settings.resource_policy``), so the API, the deploy task and the scheduler agree:

- :func:`check_resource_patch` validates what ``PATCH v1/content/{guid}`` asks for;
- :func:`resolve_resources` gives the effective :class:`Resources` of every job of the
  content (build, render, run), checked again at launch;
- :func:`check_service_account` and :func:`resolve_service_account` do the same for the
  service account.

What 0 means. A request of 0 is "no request" and is always allowed. A limit of 0 is
"no limit": content may ask for it only when ``allow_unlimited_resources`` is on and
the matching maximum is 0 (unbounded), since no limit is above any maximum. A server
default limit of 0 with a maximum set means the maximum (the maximum then is the
default), so content left at ``null`` never runs above the maximum.

Request ≤ limit compares *effective* values: a content's ``memory_request`` of 3 GiB
is refused when its ``memory_limit`` is ``null`` and the server default limit is 2 GiB
(Kubernetes refuses such a pod).

Error codes (HTTP 400), numbered in the order reference/connect-semantics.md §1.5
lists Connect's rules for codes 181-190 (Connect publishes the codes, not this
mapping, so the numbers are our reading):

======  ==================  ========================================================
code    field               refused when
======  ==================  ========================================================
181     memory_request      not a whole number of bytes in [0, 2^53]
182     memory_limit        not a whole number of bytes in [0, 2^53], or 0 (no limit)
                            while ``allow_unlimited_resources`` is off
183     memory_request      above ``max_memory_request_bytes`` (Scheduler.MaxMemoryRequest)
184     memory_limit        above ``max_memory_limit_bytes`` (Scheduler.MaxMemoryLimit),
                            including 0 (no limit) while that maximum is set
185     memory_request      above the effective memory_limit
186     cpu_request         not a number of cores in [0, 1000000]
187     cpu_limit           not a number of cores in [0, 1000000], or 0 (no limit)
                            while ``allow_unlimited_resources`` is off
188     cpu_request         above ``max_cpu_request_cores`` (Scheduler.MaxCPURequest)
189     cpu_limit           above ``max_cpu_limit_cores`` (Scheduler.MaxCPULimit),
                            including 0 (no limit) while that maximum is set
190     cpu_request         above the effective cpu_limit
176     service_account_name  not a DNS-1123 subdomain
178     service_account_name  denied to content (the server's own account, setting
                              ``kubernetes_denied_service_accounts``)
195     service_account_name  set while ``content_service_account_selection`` is off
======  ==================  ========================================================

(Only administrators may set or change ``service_account_name``: others get 403,
code 22, before any of these rules; that check is the API's.)

At launch values are checked again, because the settings may have changed since the
content was saved. A value the server no longer allows is *clamped*, not refused: a
limit above a lowered maximum runs at the maximum, a forbidden "no limit" runs at the
server default, a request above its maximum or its limit is lowered to it, and a
stored service account is ignored once selection is off. Each clamp yields a warning
that the caller logs with the content guid and job key (and the deploy task shows for
builds). Refusing would take running content offline the moment an administrator
lowers a maximum; clamping keeps it up within the new bounds, which is what the
maximum is for.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from podium.errors import ApiError
from podium.placement import to_placement
from podium.runtime.base import Placement, Resources

MAX_MEMORY_BYTES = 2**53
MAX_CPU_CORES = 1_000_000.0
RESOURCE_FIELDS = ("cpu_request", "cpu_limit", "memory_request", "memory_limit")
# https://kubernetes.io/docs/concepts/overview/working-with-objects/names/#dns-subdomain-names
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


class ResourceError(ApiError):
    """A resource or service-account value the server refuses; ``field`` names it."""

    def __init__(self, code: int, field: str, message: str) -> None:
        super().__init__(400, code, message)
        self.field = field


@dataclass(frozen=True)
class ResourcePolicy:
    """The server's defaults and maxima; 0 means no request, no limit or unbounded."""

    memory_request: int = 0
    memory_limit: int = 0
    max_memory_request: int = 0
    max_memory_limit: int = 0
    cpu_request: float = 0.0
    cpu_limit: float = 0.0
    max_cpu_request: float = 0.0
    max_cpu_limit: float = 0.0
    allow_unlimited: bool = True

    def problems(self) -> list[str]:
        """Why these defaults contradict these maxima (empty when they agree)."""
        found = []
        for kind in KINDS:
            request, limit = kind.default(self, "request"), kind.default(self, "limit")
            max_request, max_limit = kind.maximum(self, "request"), kind.maximum(self, "limit")
            if max_request and request > max_request:
                found.append(f"{kind.setting('request')} ({kind.show(request)}) exceeds "
                             f"{kind.setting('max_request')} ({kind.show(max_request)})")
            if max_limit and kind.raw_default(self, "limit") > max_limit:
                found.append(f"{kind.setting('limit')} ({kind.show(limit)}) exceeds "
                             f"{kind.setting('max_limit')} ({kind.show(max_limit)})")
            elif limit and request > limit:
                found.append(f"{kind.setting('request')} ({kind.show(request)}) exceeds the "
                             f"default limit ({kind.show(limit)}, {kind.limit_source(self)})")
        return found


@dataclass(frozen=True)
class _Kind:
    """Memory or CPU: field and setting names, codes, units."""

    name: str  # "memory" or "cpu"
    whole: bool
    high: float
    unit_suffix: str  # of the setting names
    range_codes: tuple[int, int]  # request, limit
    max_codes: tuple[int, int]
    order_code: int
    connect: str  # Connect's key stem: "Memory" or "CPU"

    def field(self, which: str) -> str:
        return f"{self.name}_{which}"

    def setting(self, which: str) -> str:
        """The setting's name: ``setting("limit")`` is memory_limit_bytes, ``"max_limit"``
        max_memory_limit_bytes."""
        if which.startswith("max_"):
            return f"max_{self.name}_{which[4:]}_{self.unit_suffix}"
        return f"{self.name}_{which}_{self.unit_suffix}"

    def raw_default(self, policy: ResourcePolicy, which: str) -> float:
        return float(getattr(policy, f"{self.name}_{which}"))

    def maximum(self, policy: ResourcePolicy, which: str) -> float:
        return float(getattr(policy, f"max_{self.name}_{which}"))

    def default(self, policy: ResourcePolicy, which: str) -> float:
        """The server default; an unset default limit is the maximum."""
        value = self.raw_default(policy, which)
        if which == "limit" and not value:
            return self.maximum(policy, "limit")
        return value

    def limit_source(self, policy: ResourcePolicy) -> str:
        if self.raw_default(policy, "limit"):
            return f"setting {self.setting('limit')}"
        return f"setting {self.setting('max_limit')}, as {self.setting('limit')} is 0"

    def show(self, value: float) -> str:
        if not value:
            return "0 (none)"
        if self.whole:
            return f"{int(value)} bytes ({_bytes(int(value))})"
        return f"{value:g} cores"


def _bytes(value: int) -> str:
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.4g} {unit}"
        size /= 1024
    return f"{value} B"  # pragma: no cover


MEMORY = _Kind("memory", True, MAX_MEMORY_BYTES, "bytes", (181, 182), (183, 184), 185, "Memory")
CPU = _Kind("cpu", False, MAX_CPU_CORES, "cores", (186, 187), (188, 189), 190, "CPU")
KINDS = (MEMORY, CPU)


# --- validation on write ------------------------------------------------------------------


def _number(kind: _Kind, which: str, value: Any) -> float:
    """``value`` as a number within range, or the range error."""
    code = kind.range_codes[0 if which == "request" else 1]
    field = kind.field(which)
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if ok and kind.whole and isinstance(value, float):
        ok = value.is_integer()
    if not ok or not 0 <= value <= kind.high:
        what = "a whole number of bytes" if kind.whole else "a number of cores"
        raise ResourceError(
            code, field,
            f"{field} must be {what} from 0 to {kind.high:g}, or null for the server default; "
            f"got {value!r}.",
        )
    return float(value)


def _check_value(kind: _Kind, which: str, value: Any, policy: ResourcePolicy) -> float:
    number = _number(kind, which, value)
    field, index = kind.field(which), (0 if which == "request" else 1)
    maximum = kind.maximum(policy, which)
    connect = f"Scheduler.Max{kind.connect}{which.capitalize()}"
    if which == "limit" and number == 0:
        if not policy.allow_unlimited:
            raise ResourceError(
                kind.range_codes[1], field,
                f"{field} 0 (no limit) is not allowed on this server (setting "
                f"allow_unlimited_resources is off); give a limit, or null for the server default.",
            )
        if maximum:
            raise ResourceError(
                kind.max_codes[1], field,
                f"{field} 0 (no limit) exceeds this server's maximum of {kind.show(maximum)} "
                f"(setting {kind.setting('max_limit')}, Connect's {connect}).",
            )
    if maximum and number > maximum:
        raise ResourceError(
            kind.max_codes[index], field,
            f"{field} {kind.show(number)} exceeds this server's maximum of {kind.show(maximum)} "
            f"(setting {kind.setting('max_' + which)}, Connect's {connect}).",
        )
    return number


def _stored(kind: _Kind, number: float) -> int | float:
    return int(number) if kind.whole else number


def check_resource_patch(
    body: Mapping[str, Any], current: Mapping[str, Any], policy: ResourcePolicy
) -> dict[str, int | float | None]:
    """The resource fields of ``body``, validated; raises :class:`ResourceError`.

    ``current`` holds the content's stored values. Request ≤ limit is checked for
    memory (or CPU) whenever the body touches memory (or CPU), on effective values.
    """
    changes: dict[str, int | float | None] = {}
    for kind in KINDS:
        touched = False
        for which in ("request", "limit"):
            field = kind.field(which)
            if field in body:
                touched = True
                value = body[field]
                changes[field] = (
                    None if value is None else _stored(kind, _check_value(kind, which, value, policy))
                )
        if not touched:
            continue
        request, limit = (
            changes[f] if f in changes else current.get(f)
            for f in (kind.field("request"), kind.field("limit"))
        )
        effective_request = kind.default(policy, "request") if request is None else float(request)
        effective_limit = kind.default(policy, "limit") if limit is None else float(limit)
        if effective_limit and effective_request > effective_limit:
            request_text = kind.show(effective_request) + (
                f" (server default, setting {kind.setting('request')})" if request is None else ""
            )
            limit_text = kind.show(effective_limit) + (
                f" (server default, {kind.limit_source(policy)})" if limit is None else ""
            )
            raise ResourceError(
                kind.order_code, kind.field("request"),
                f"{kind.field('request')} {request_text} cannot exceed {kind.field('limit')} "
                f"{limit_text}.",
            )
    return changes


# --- resolution at launch -----------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedResources:
    """The effective resources of a content's jobs, and what was clamped to get them."""

    resources: Resources
    warnings: tuple[str, ...] = ()


def content_values(content: Any) -> dict[str, Any]:
    """The resource fields of a content record (ORM object or anything with attributes)."""
    return {field: getattr(content, field, None) for field in RESOURCE_FIELDS}


def _resolve_kind(
    kind: _Kind, values: Mapping[str, Any], policy: ResourcePolicy, warnings: list[str]
) -> tuple[float, float]:
    def stored(which: str) -> float | None:
        value = values.get(kind.field(which))
        if value is None:
            return None
        try:
            return _number(kind, which, value)
        except ResourceError:
            warnings.append(f"{kind.field(which)} {value!r} is not valid; using the server default")
            return None

    limit_field, request_field = kind.field("limit"), kind.field("request")
    default_limit = kind.default(policy, "limit")
    max_limit, max_request = kind.maximum(policy, "limit"), kind.maximum(policy, "request")
    limit = stored("limit")
    if limit is None:
        limit = default_limit
    else:
        if limit == 0 and not policy.allow_unlimited:
            warnings.append(
                f"{limit_field} 0 (no limit) is no longer allowed (allow_unlimited_resources is "
                f"off); using the server default {kind.show(default_limit)}"
            )
            limit = default_limit
        if max_limit and (limit == 0 or limit > max_limit):
            warnings.append(
                f"{limit_field} {kind.show(limit)} exceeds the maximum {kind.show(max_limit)} "
                f"({kind.setting('max_limit')}); using the maximum"
            )
            limit = max_limit
    request = stored("request")
    if request is None:
        request = kind.default(policy, "request")
    if max_request and request > max_request:
        warnings.append(
            f"{request_field} {kind.show(request)} exceeds the maximum {kind.show(max_request)} "
            f"({kind.setting('max_request')}); using the maximum"
        )
        request = max_request
    if limit and request > limit:
        warnings.append(
            f"{request_field} {kind.show(request)} exceeds the effective {limit_field} "
            f"{kind.show(limit)}; using the limit"
        )
        request = limit
    return request, limit


def resolve_resources(values: Mapping[str, Any], policy: ResourcePolicy) -> ResolvedResources:
    """The effective resources of every job of content with these stored ``values``.

    ``None`` in the result means no request or no limit. Never raises: values the
    server no longer allows are clamped, each with a warning (see the module docs).
    """
    warnings: list[str] = []
    memory_request, memory_limit = _resolve_kind(MEMORY, values, policy, warnings)
    cpu_request, cpu_limit = _resolve_kind(CPU, values, policy, warnings)
    resources = Resources(
        cpu_request=cpu_request or None,
        cpu_limit=cpu_limit or None,
        memory_request=int(memory_request) or None,
        memory_limit=int(memory_limit) or None,
    )
    return ResolvedResources(resources, tuple(warnings))


@dataclass(frozen=True)
class JobResources:
    """What every job of one content item gets: resources, service account, placement
    (the content's own; its environment's is added at launch), clamp warnings."""

    resources: Resources
    service_account: str | None = None
    warnings: tuple[str, ...] = ()
    placement: Placement | None = None


@dataclass(frozen=True)
class GpuPolicy:
    """Server defaults and maxima of GPU limits (whole devices; a maximum of 0: none)."""

    nvidia_default: int = 0
    nvidia_max: int = 0
    amd_default: int = 0
    amd_max: int = 0


GPU_FIELDS = (("nvidia_gpu_limit", "nvidia"), ("amd_gpu_limit", "amd"))


@dataclass(frozen=True)
class JobPolicy:
    """What decides the resources and service account of every job (``Settings.job_policy``)."""

    resources: ResourcePolicy = ResourcePolicy()
    default_service_account: str = ""
    service_account_selection: bool = True
    denied_service_accounts: tuple[str, ...] = ()
    gpus: GpuPolicy = GpuPolicy()


def check_gpu_patch(body: Mapping[str, Any], gpus: GpuPolicy) -> dict[str, int | None]:
    """``nvidia_gpu_limit``/``amd_gpu_limit`` of a content patch: whole numbers from 0 to
    the server maximum, or null for the server default."""
    changes: dict[str, int | None] = {}
    for field, vendor in GPU_FIELDS:
        if field not in body:
            continue
        value = body[field]
        maximum = getattr(gpus, f"{vendor}_max")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum):
            raise ResourceError(
                3, field,
                f"{field} must be a whole number from 0 to {maximum} (setting max_{field}), or null "
                f"for the server default; got {value!r}.",
            )
        changes[field] = value
    return changes


def _gpu_limits(content: Any, gpus: GpuPolicy, warnings: list[str]) -> dict[str, int | None]:
    limits: dict[str, int | None] = {}
    for field, vendor in GPU_FIELDS:
        stored = getattr(content, field, None)
        wanted = getattr(gpus, f"{vendor}_default") if stored is None else int(stored)
        maximum = getattr(gpus, f"{vendor}_max")
        if wanted > maximum:
            warnings.append(f"{field} {wanted} is above the server maximum {maximum} (setting max_{field}); "
                            f"using {maximum}")
            wanted = maximum
        limits[field] = wanted or None
    return limits


def for_content(content: Any, policy: JobPolicy) -> JobResources:
    """The resolved resources, service account and placement of ``content``'s jobs."""
    resolved = resolve_resources(content_values(content), policy.resources)
    account, notes = resolve_service_account(
        getattr(content, "service_account_name", None), policy.default_service_account,
        policy.service_account_selection, policy.denied_service_accounts,
    )
    warnings: list[str] = []
    resources = dataclasses.replace(resolved.resources, **_gpu_limits(content, policy.gpus, warnings))
    placement = to_placement(getattr(content, "kubernetes_placement", None))
    return JobResources(resources, account, resolved.warnings + notes + tuple(warnings), placement)


# --- service accounts -----------------------------------------------------------------------


def service_account_problem(name: Any) -> str | None:
    """Why ``name`` cannot be a Kubernetes service account name (None when it can)."""
    if not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        return (
            f"{name!r} is not a valid DNS-1123 subdomain: lowercase letters, digits, '-' and '.', "
            "starting and ending with a letter or digit, at most 253 characters."
        )
    return None


def check_service_account(name: Any, selection_enabled: bool, denied: Collection[str] = ()) -> str | None:
    """A content's new ``service_account_name`` (None or "" clears it), validated; a name
    in ``denied`` (the server's own account, setting kubernetes_denied_service_accounts)
    is refused with error 178."""
    if name is None or name == "":
        return None
    if not selection_enabled:
        raise ResourceError(
            195, "service_account_name",
            "Service accounts cannot be set on content: this server has content service account "
            "selection turned off (setting content_service_account_selection).",
        )
    problem = service_account_problem(name)
    if problem:
        raise ResourceError(176, "service_account_name", f"service_account_name {problem}")
    if name in denied:
        raise ResourceError(
            178, "service_account_name",
            f"service_account_name {name!r} is refused: content may not run as the Podium server's "
            "own service account or another denied one (setting kubernetes_denied_service_accounts).",
        )
    return str(name)


def resolve_service_account(
    name: str | None, default: str, selection_enabled: bool, denied: Collection[str] = ()
) -> tuple[str | None, tuple[str, ...]]:
    """The service account of a content's jobs, and a warning when the stored one is ignored."""
    if name and name in denied:
        return default or None, (
            f"service_account_name {name!r} is ignored: it is denied to content "
            f"(setting kubernetes_denied_service_accounts); using "
            f"{repr(default) if default else 'the namespace default'}",
        )
    if name and selection_enabled:
        return name, ()
    if name:
        return default or None, (
            f"service_account_name {name!r} is ignored: content service account selection is "
            f"off (content_service_account_selection); using "
            f"{repr(default) if default else 'the namespace default'}",
        )
    return default or None, ()
