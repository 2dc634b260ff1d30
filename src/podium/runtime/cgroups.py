"""Resource limits for local jobs: cgroup v2 or v1 where the host allows, else rlimits.

A job's cgroups live below the server's own cgroup, in ``podium/<key>``: for a server
in the root cgroup that is ``/sys/fs/cgroup/memory/podium/<key>`` and
``/sys/fs/cgroup/cpu/podium/<key>`` (v1) or ``/sys/fs/cgroup/podium/<key>`` (v2).
Nesting keeps jobs inside whatever limits the host put on Podium, and it is the only
place cgroup v2 delegation allows. Memory limits also cap swap, so that swapping cannot
hide an out-of-memory kill; CPU limits are a CFS quota over a 100 ms period.

When cgroups cannot be used (not mounted, read-only, not delegated) a memory limit
falls back to ``RLIMIT_AS`` and a CPU limit is not enforced; :func:`plan_limits` says
why in :attr:`LimitPlan.warnings` and the backend logs it.

Standard library only, and no podium imports: the job supervisor (``_supervise.py``)
loads this file by path to join, watch and remove cgroups without importing the package.
"""

from __future__ import annotations

import errno
import os
import signal
import time

# Not typing.TYPE_CHECKING: importing typing would cost the job supervisor's start (every
# cold start) milliseconds.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CGROUP_ROOT = "/sys/fs/cgroup"
SELF_CGROUP = "/proc/self/cgroup"
CPU_PERIOD_US = 100_000
MIN_CPU_QUOTA_US = 1_000  # the kernel's lower bound for cpu.cfs_quota_us and cpu.max


class LimitPlan:
    """How one job's limits are enforced, as decided at launch.

    ``dirs`` are the cgroups the job's processes join (one per v1 hierarchy, or one v2
    cgroup), ``oom_counters`` the files holding an ``oom_kill N`` line, ``rlimit_as`` an
    address-space limit applied instead of a memory cgroup. JSON round-trips through
    :meth:`to_dict` and :meth:`from_dict`.
    """

    __slots__ = (
        "cpu_mode",
        "dirs",
        "memory_limit",
        "memory_mode",
        "oom_counters",
        "rlimit_as",
        "warnings",
    )

    def __init__(
        self,
        memory_mode: str | None = None,
        cpu_mode: str | None = None,
        memory_limit: int | None = None,
        dirs: list[str] | None = None,
        oom_counters: list[str] | None = None,
        rlimit_as: int | None = None,
        warnings: list[str] | None = None,
    ) -> None:
        self.memory_mode = memory_mode  # "cgroup2", "cgroup1", "rlimit" or None
        self.cpu_mode = cpu_mode  # "cgroup2", "cgroup1" or None
        self.memory_limit = memory_limit
        self.dirs = dirs or []
        self.oom_counters = oom_counters or []
        self.rlimit_as = rlimit_as
        self.warnings = warnings or []

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LimitPlan:
        return cls(**{name: raw.get(name) for name in cls.__slots__})


def plan_limits(
    name: str,
    memory_limit: int | None,
    cpu_limit: float | None,
    root: str = CGROUP_ROOT,
    self_cgroup: str = SELF_CGROUP,
) -> LimitPlan:
    """Create and configure the cgroups for job ``name``; fall back where impossible.

    ``None`` or 0 means no limit. Never raises for a host that cannot enforce a limit:
    the plan then uses the fallback and carries a warning saying why.
    """
    plan = LimitPlan(memory_limit=memory_limit or None)
    if not memory_limit and not cpu_limit:
        return plan
    own = _own_cgroups(self_cgroup)
    v2_controllers = _read(os.path.join(root, "cgroup.controllers"), "").split()
    if v2_controllers:
        wanted = [c for c, v in (("memory", memory_limit), ("cpu", cpu_limit)) if v]
        missing = [c for c in wanted if c not in v2_controllers]
        if not missing:
            try:
                path = _make_v2(root, own.get("", "/"), name, memory_limit, cpu_limit)
            except OSError as error:
                return _fallback(plan, memory_limit, cpu_limit, _why(error))
            plan.dirs.append(path)
            if memory_limit:
                plan.memory_mode = "cgroup2"
                plan.oom_counters.append(os.path.join(path, "memory.events"))
            if cpu_limit:
                plan.cpu_mode = "cgroup2"
            return plan
        reason = f"cgroup v2 at {root} does not offer the {', '.join(missing)} controller"
        return _fallback(plan, memory_limit, cpu_limit, reason)

    reasons = []
    if memory_limit:
        mount = os.path.join(root, "memory")
        if os.path.exists(os.path.join(mount, "memory.limit_in_bytes")):
            try:
                path = _make_v1_memory(mount, own.get("memory", "/"), name, memory_limit)
                plan.dirs.append(path)
                plan.memory_mode = "cgroup1"
                plan.oom_counters.append(os.path.join(path, "memory.oom_control"))
                memory_limit = None
            except OSError as error:
                reasons.append(_why(error))
        else:
            reasons.append(f"no cgroup v2 or v1 memory controller under {root}")
    if cpu_limit:
        mount = os.path.join(root, "cpu")
        if os.path.exists(os.path.join(mount, "cpu.cfs_quota_us")):
            try:
                plan.dirs.append(_make_v1_cpu(mount, own.get("cpu", "/"), name, cpu_limit))
                plan.cpu_mode = "cgroup1"
                cpu_limit = None
            except OSError as error:
                reasons.append(_why(error))
        else:
            reasons.append(f"no cgroup v2 or v1 cpu controller under {root}")
    if memory_limit or cpu_limit:
        return _fallback(plan, memory_limit, cpu_limit, "; ".join(reasons))
    return plan


def join(plan: LimitPlan, pid: int) -> None:
    """Move process ``pid`` into every cgroup of the plan (before it execs the job)."""
    for path in plan.dirs:
        with open(os.path.join(path, "cgroup.procs"), "w") as procs:
            procs.write(str(pid))


def oom_kills(plan: LimitPlan) -> int | None:
    """How many of the job's processes the kernel killed for memory; ``None`` if unknown.

    Reads ``oom_kill`` from ``memory.events`` (v2) or ``memory.oom_control`` (v1, Linux
    4.13 and later). Read it before :func:`remove`, which deletes the counters.
    """
    total: int | None = None
    for path in plan.oom_counters:
        for line in _read(path, "").splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                total = (total or 0) + int(value)
    return total


def signal_all(plan: LimitPlan, sig: int, spare: tuple[int, ...] = ()) -> int:
    """Send ``sig`` to every process in the job's cgroups, wherever its session went,
    except the pids in ``spare``."""
    sent = 0
    for path in plan.dirs:
        for pid in _read(os.path.join(path, "cgroup.procs"), "").split():
            if int(pid) in spare:
                continue
            try:
                os.kill(int(pid), sig)
                sent += 1
            except ProcessLookupError:
                pass
    return sent


def remove(plan: LimitPlan, timeout: float = 2.0) -> None:
    """Kill what is left in the job's cgroups and delete them; tolerates them being gone."""
    deadline = time.monotonic() + timeout
    for path in plan.dirs:
        while True:
            signal_all(LimitPlan(dirs=[path]), signal.SIGKILL)
            try:
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError as error:
                # EBUSY while killed processes are still exiting.
                if error.errno != errno.EBUSY or time.monotonic() > deadline:
                    break
                time.sleep(0.02)


def format_bytes(count: int) -> str:
    """``67108864`` -> ``"64.0 MiB"``."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def oom_message(memory_limit: int) -> str:
    """The user-facing message for a job killed for exceeding its memory limit."""
    limit = f"{format_bytes(memory_limit)} ({memory_limit} bytes)"
    return f"terminated: exceeded memory limit of {limit}"


def _fallback(
    plan: LimitPlan, memory_limit: int | None, cpu_limit: float | None, reason: str
) -> LimitPlan:
    if memory_limit:
        plan.memory_mode = "rlimit"
        plan.rlimit_as = memory_limit
        plan.warnings.append(
            f"memory limit of {format_bytes(memory_limit)} enforced with RLIMIT_AS (address "
            "space, not resident memory: programs reserving large virtual areas may fail "
            f"early); cgroups unavailable: {reason}"
        )
    if cpu_limit:
        plan.cpu_mode = None
        plan.warnings.append(
            f"cpu limit of {cpu_limit:g} cores not enforced (no rlimit equivalent); "
            f"cgroups unavailable: {reason}"
        )
    return plan


def _make_v2(
    root: str, own: str, name: str, memory_limit: int | None, cpu_limit: float | None
) -> str:
    parent = _below(root, own)
    controllers = [c for c, v in (("memory", memory_limit), ("cpu", cpu_limit)) if v]
    podium = os.path.join(parent, "podium")
    # Controllers must be enabled in each ancestor's subtree_control. A non-root cgroup
    # that holds processes cannot do that (EBUSY, "no internal processes"): run Podium in
    # a delegated cgroup of its own (systemd Delegate=yes) with the server in a leaf.
    _enable(parent, controllers)
    os.makedirs(podium, exist_ok=True)
    _enable(podium, controllers)
    path = os.path.join(podium, name)
    _fresh_dir(path)
    try:
        if memory_limit:
            _write(os.path.join(path, "memory.max"), str(memory_limit))
            _write_if_present(os.path.join(path, "memory.swap.max"), "0")
            # Kill the whole job on OOM, as Kubernetes does on cgroup v2.
            _write_if_present(os.path.join(path, "memory.oom.group"), "1")
        if cpu_limit:
            _write(os.path.join(path, "cpu.max"), f"{_quota(cpu_limit)} {CPU_PERIOD_US}")
    except OSError:
        remove(LimitPlan(dirs=[path]))
        raise
    return path


def _make_v1_memory(mount: str, own: str, name: str, memory_limit: int) -> str:
    path = os.path.join(_below(mount, own), "podium", name)
    _fresh_dir(path)
    try:
        _write(os.path.join(path, "memory.limit_in_bytes"), str(memory_limit))
    except OSError:
        remove(LimitPlan(dirs=[path]))
        raise
    try:
        # Only present with swap accounting; must be written after limit_in_bytes.
        _write_if_present(os.path.join(path, "memory.memsw.limit_in_bytes"), str(memory_limit))
    except OSError:
        pass  # the memory limit holds; only swap use is not capped
    return path


def _make_v1_cpu(mount: str, own: str, name: str, cpu_limit: float) -> str:
    path = os.path.join(_below(mount, own), "podium", name)
    _fresh_dir(path)
    try:
        _write(os.path.join(path, "cpu.cfs_period_us"), str(CPU_PERIOD_US))
        _write(os.path.join(path, "cpu.cfs_quota_us"), str(_quota(cpu_limit)))
    except OSError:
        remove(LimitPlan(dirs=[path]))
        raise
    return path


def _fresh_dir(path: str) -> None:
    """Create the job's cgroup; a job never shares one. A leftover empty cgroup of the
    same name (from a supervisor that was killed) is replaced; one holding processes is
    another job's (a second server on this host using the same key): refuse it."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        os.mkdir(path)
    except FileExistsError:
        try:
            os.rmdir(path)
        except OSError as error:
            raise OSError(errno.EBUSY, "cgroup in use by another job", path) from error
        os.mkdir(path)


def _quota(cpu_limit: float) -> int:
    return max(MIN_CPU_QUOTA_US, round(cpu_limit * CPU_PERIOD_US))


def _enable(path: str, controllers: list[str]) -> None:
    enabled = _read(os.path.join(path, "cgroup.subtree_control"), "").split()
    todo = [c for c in controllers if c not in enabled]
    if todo:
        _write(os.path.join(path, "cgroup.subtree_control"), " ".join(f"+{c}" for c in todo))


def _below(mount: str, own: str) -> str:
    """The server's own cgroup inside ``mount``, or the mount itself when it is not
    visible there (a cgroup namespace, or a mount of another hierarchy's root)."""
    candidate = os.path.join(mount, own.strip("/"))
    return candidate if os.path.isdir(candidate) else mount


def _own_cgroups(self_cgroup: str) -> dict[str, str]:
    """Controller -> this process's cgroup path; ``""`` is the v2 unified hierarchy."""
    own: dict[str, str] = {}
    for line in _read(self_cgroup, "").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                own[controller] = parts[2]
    return own


def _why(error: OSError) -> str:
    if error.filename and error.strerror:
        return f"cannot set up {error.filename}: {error.strerror}"
    return f"cannot set up a cgroup: {error}"


def _read(path: str, default: str) -> str:
    try:
        with open(path) as file:
            return file.read()
    except OSError:
        return default


def _write(path: str, value: str) -> None:
    with open(path, "w") as file:
        file.write(value)


def _write_if_present(path: str, value: str) -> None:
    if os.path.exists(path):
        _write(path, value)
