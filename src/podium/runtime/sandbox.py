"""Bubblewrap sandboxes for local jobs: the argv, the setup script, the probe.

A sandboxed job (a :class:`~podium.runtime.base.JobSpec` with a
:class:`~podium.runtime.base.Sandbox`) runs as this chain of processes::

    supervisor ── bwrap (monitor) ── bwrap (pid 1 of the job's pid namespace)
                                         └─ setpriv ─ /bin/sh ─ exec the job's command

- **bwrap**, the monitor, stays outside: it waits for the command and exits with its
  status (a command killed by signal N as 128 + N, as shells report it). With
  ``--die-with-parent`` it dies with the supervisor, and its pid 1 with it, which
  takes every process of the namespace along.
- **pid 1** reaps zombies and ignores the signals sent to the job's process group (the
  kernel delivers a signal from outside to a namespace's init only if it handles it),
  so SIGTERM reaches the command and SIGKILL ends everything. Not ``--as-pid-1``: a
  command as pid 1 would ignore SIGTERM unless it installs a handler, and leave zombies.
- ``--new-session`` makes pid 1 the leader of a session and process group of its own:
  the backend signals that group (the monitor is not in it), and the job has no
  controlling terminal to push input into.
- **setpriv** (util-linux) drops to the job's uid/gid with no supplementary groups, no
  capabilities (bounding set included) and ``no_new_privs``. bubblewrap runs as root
  when the server does, because only root can bind paths below the 0700 data dir; as
  a user it would need the whole path to each bound directory searchable by the job's
  uid. A server that is not root runs bubblewrap in a user namespace instead, and only
  as its own uid: there is nothing to drop.
- **/bin/sh** reads :func:`setup_script` from its standard input: it sets the job's
  environment and execs the command with ``/dev/null`` as standard input. bwrap and
  setpriv run as root with an empty environment, so nothing a publisher sets
  (``LD_PRELOAD``, ``GCONV_PATH``...) reaches a privileged process, and no value
  appears on a command line where ``ps`` would show it.

Everything the job sees is listed in the argv: the system directories read-only, a
private ``/proc`` (its own processes only), a minimal ``/dev``, a ``/tmp`` of its own,
and the sandbox's paths. The network is shared with the host: content listens on
loopback ports and unix sockets that the proxy reaches (so abstract unix sockets of the
host are reachable too). IPC and cgroup namespaces are private.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from podium.runtime.base import Sandbox

# What every sandboxed job sees read-only; those missing on the host are skipped. Debian's
# package database too: Debian's R packages ask dpkg which versions of their system
# libraries are installed (rmarkdown asks for libjs-jquery's).
SYSTEM_DIRS: tuple[str, ...] = (
    "/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32", "/etc", "/var/lib/dpkg",
)
BWRAP = "bwrap"
SETPRIV = "/usr/bin/setpriv"
SHELL = "/bin/sh"
PROBE_UID = 65534  # nobody: what the probe switches to when the server is root
PROBE_TIMEOUT_SECONDS = 10.0
# setpriv needs these until it has switched users; it drops them (and the rest).
_SETPRIV_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP")
_USERNS_SYSCTLS = (
    ("/proc/sys/kernel/unprivileged_userns_clone", "0", "kernel.unprivileged_userns_clone=1"),
    ("/proc/sys/user/max_user_namespaces", "0", "user.max_user_namespaces=15000"),
    ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1",
     "kernel.apparmor_restrict_unprivileged_userns=0"),
)


@dataclass(frozen=True)
class SandboxSupport:
    """Whether this host can run sandboxed jobs; if not, ``reason`` says how to fix it."""

    available: bool
    reason: str


def bwrap_argv(
    sandbox: Sandbox,
    command: Sequence[str],
    workdir: str,
    *,
    privileged: bool,
    system_dirs: Iterable[str] = SYSTEM_DIRS,
    bwrap: str = BWRAP,
    setpriv: str = SETPRIV,
    shell: str = SHELL,
) -> list[str]:
    """The argv that runs ``command`` in ``workdir`` inside ``sandbox``; pure.

    ``privileged`` is whether bwrap runs as root (then setpriv switches to the
    sandbox's uid) or as the sandbox's own uid (then in a user namespace). The process
    must get :func:`setup_script` on its standard input and an empty environment. The
    supervisor adds ``--json-status-fd`` after ``argv[0]``.
    """
    argv = [
        bwrap, "--unshare-pid", "--unshare-ipc", "--unshare-cgroup-try",
        "--die-with-parent", "--new-session", "--cap-drop", "ALL",
    ]
    if privileged:
        for cap in _SETPRIV_CAPS:
            argv += ["--cap-add", cap]
    else:
        argv.append("--unshare-user")
    mounts = {posixpath.normpath(path): ["--ro-bind-try", path, path] for path in system_dirs}
    mounts.update({
        "/proc": ["--proc", "/proc"],
        "/dev": ["--dev", "/dev"],
        "/tmp": ["--perms", "1777", "--tmpfs", "/tmp"],
    })
    mounts.update({path: ["--ro-bind", path, path] for path in sandbox.read_only})
    mounts.update({path: ["--bind", path, path] for path in sandbox.writable})
    # Parents that no mount provides: bubblewrap would make them 0700, which closes
    # them to the job's uid when bubblewrap runs as root.
    binds = [path for path, args in mounts.items() if "bind" in args[0]]
    for parent in {parent for path in list(mounts) for parent in _parents(path)}:
        if parent not in mounts and not any(_below(parent, bound) for bound in binds):
            mounts[parent] = ["--perms", "0755", "--dir", parent]
    # Parents before children: a mount inside another one (or inside /tmp) comes later.
    for path in sorted(mounts, key=lambda path: path.split("/")):
        argv += mounts[path]
    argv += ["--chdir", workdir, "--"]
    if privileged:
        argv += [
            setpriv, f"--reuid={sandbox.uid}", f"--regid={sandbox.gid}", "--clear-groups",
            "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all",
            "--no-new-privs", "--",
        ]
    return [*argv, shell, "-s", "--", *command]


def setup_script(env: Mapping[str, str]) -> str:
    """The shell script (read from standard input) that gives the job exactly ``env``
    and execs its command, ``"$@"``. ValueError for a name the shell cannot export."""
    lines = ["unset PWD"]  # bwrap sets it; a job's environment is exactly its spec's
    for name, value in env.items():
        if not (name.isascii() and name.isidentifier()):
            raise ValueError(f"environment variable name {name!r} cannot be set in a sandbox")
        if "\x00" in value:
            raise ValueError(f"the value of {name} contains a NUL byte")
        quoted = value.replace("'", "'\\''")
        lines.append(f"export {name}='{quoted}'")
    lines.append('exec "$@" </dev/null')
    return "\n".join(lines) + "\n"


def probe_sandbox(
    uid: int | None = None,
    gid: int | None = None,
    *,
    bwrap: str = BWRAP,
    setpriv: str = SETPRIV,
    system_dirs: Iterable[str] = SYSTEM_DIRS,
) -> SandboxSupport:
    """Whether sandboxed jobs (as ``uid``/``gid``, if given) can run here, found by
    running ``true`` in a real sandbox; the reason names the fix when they cannot.

    The answer does not change while the host does not: callers keep a success.
    """
    privileged = os.geteuid() == 0
    if not privileged and uid is not None and (uid, gid) != (os.geteuid(), os.getegid()):
        return SandboxSupport(
            False,
            f"the server runs as uid {os.geteuid()}, not root: it can run sandboxed jobs "
            f"only as itself, not as uid {uid} gid {gid} (run the server as root to give "
            "content uids of their own)",
        )
    path = shutil.which(bwrap)
    if path is None:
        return SandboxSupport(
            False, f"bubblewrap ({bwrap}) is not installed: install Debian's bubblewrap package"
        )
    if privileged and not os.access(setpriv, os.X_OK):
        return SandboxSupport(False, f"{setpriv} is missing: install Debian's util-linux package")
    probe_uid = PROBE_UID if privileged else os.geteuid()
    probe_gid = PROBE_UID if privileged else os.getegid()
    argv = bwrap_argv(
        Sandbox(probe_uid, probe_gid), ["true"], "/",
        privileged=privileged, system_dirs=system_dirs, bwrap=path, setpriv=setpriv,
    )
    try:
        done = subprocess.run(
            argv, input=setup_script({"PATH": "/usr/bin:/bin"}).encode(), env={},
            capture_output=True, timeout=PROBE_TIMEOUT_SECONDS, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return SandboxSupport(False, f"could not run {path}: {error}")
    if done.returncode == 0:
        return SandboxSupport(True, "bubblewrap sandboxes work" + (
            " (as root, switching users with setpriv)" if privileged else " (in a user namespace)"
        ))
    said = done.stderr.decode(errors="replace").strip().splitlines()
    said_text = said[-1] if said else f"exit code {done.returncode}"
    if not privileged:
        for sysctl, off, fix in _USERNS_SYSCTLS:
            if _read(sysctl) == off:
                return SandboxSupport(
                    False, f"user namespaces are disabled ({said_text}): set sysctl {fix}"
                )
    return SandboxSupport(False, f"bubblewrap cannot create a sandbox here: {said_text}")


def prepare_writable(path: str | os.PathLike[str], uid: int, gid: int) -> Path:
    """Make ``path`` a directory (mode 0700) owned by ``uid``/``gid``, creating it if
    needed, for a sandbox's writable paths. Refuses a symlink or a non-directory."""
    target = Path(path)
    try:
        target.mkdir(mode=0o700)
    except FileExistsError:
        pass
    try:
        fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as error:
        raise ValueError(f"{target} exists and is not a directory") from error
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
    return target


def _parents(path: str) -> list[str]:
    parents = []
    while (path := posixpath.dirname(path)) != "/":
        parents.append(path)
    return parents


def _below(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _read(path: str) -> str | None:
    try:
        with open(path) as file:
            return file.read().strip()
    except OSError:
        return None
