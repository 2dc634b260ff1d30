"""Bytecode for a published Python environment, compiled after its deploy finished.

Sandboxed content sees its environment read-only, so Python cannot write
``__pycache__`` there at a process's start: without ``.pyc`` files every start
compiles every module it imports again (hundreds of ms for FastAPI). Compiling
inside the build (uv's ``--compile-bytecode``) took 70% of a first deploy, so local
builds install without it and the environment is compiled by a *compile job* once it
is published:

- the job runs the environment's interpreter (``-I -S``: no ``.pth`` file, nothing of
  the packages is run) over :data:`SCRIPT`, sandboxed as builds are, niced, and
  writes each module's ``.pyc`` into a scratch folder beside the environment
  (``envs/.<fingerprint>.<job key>/``), mirroring the environment's tree; it sees the
  environment itself read-only;
- when it succeeded the server moves those files into the environment's
  ``__pycache__`` folders (:func:`adopt_bytecode`: regular ``*.pyc`` files only,
  only beside folders that are really the environment's), gives them to itself
  read-only as it does the rest of a build, and writes :data:`COMPILED_MARKER`.

A process started before then works as before: Python compiles in memory what it
cannot find. One started after imports the ``.pyc`` files (checked against each
source's size and mtime, as every ``.pyc``; Python sets the code's file name from the
path it loaded, so the scratch path never shows). A compile that fails or is cut off
(a server stop) leaves whatever ``.pyc`` files were moved, each written whole by a
rename, and no marker: the next deploy that reuses the environment compiles it again.

While a compile job runs, its environment counts as in use for the runtime caches
(:func:`compiling`): deleting the cache retires it rather than pulling the folder
from under the job.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from podium.store.models import Job

COMPILED_MARKER = ".podium-compiled"
KIND = "compile"  # a compile job's key starts with it; its tag is a build's (python_restore,
# one of Connect's job tags), its kind "build"

# Run as ``python -I -S -c SCRIPT <environment> <scratch> <workers>`` with the
# environment's interpreter (any Python 3.6+: no f-strings beyond 3.6's, no
# invalidation modes): compiles every ``*.py`` below ``<environment>/lib`` to
# ``<scratch>/<same folder>/__pycache__/<name>.<cache tag>.pyc``.
SCRIPT = r"""
import os, py_compile, sys, time
env, out, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
tag = sys.implementation.cache_tag

def sources():
    for folder, dirs, files in os.walk(os.path.join(env, "lib")):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(folder, name)

def one(source):
    folder, name = os.path.split(os.path.relpath(source, env))
    pyc = os.path.join("__pycache__", name[:-3] + "." + tag + ".pyc")
    try:  # compiled already (by uv, in an environment built before builds compiled later)
        if os.stat(os.path.join(env, folder, pyc)).st_mtime >= os.stat(source).st_mtime:
            return None
    except OSError:
        pass
    target = os.path.join(out, folder, pyc)
    try:
        py_compile.compile(source, cfile=target, dfile=source, doraise=True)
    except Exception as error:
        return "%s: %s" % (source, type(error).__name__)
    return None

def compile_all(part):
    failed = [f for f in map(one, part) if f]
    for line in failed[:20]:
        print("  not compiled: " + line, flush=True)
    return len(failed)

# Plain forks, not multiprocessing: a sandbox has no /dev/shm for its locks.
try:
    os.nice(10)
except OSError:
    pass
started = time.monotonic()
files = list(sources())
workers = max(1, min(workers, len(files) // 50))
print("Compiling %d modules to bytecode (%s, %d workers)" % (len(files), tag, workers), flush=True)
children = []
for part in [files[i::workers] for i in range(1, workers)]:
    pid = os.fork()
    if pid == 0:
        os._exit(min(compile_all(part), 255))
    children.append(pid)
failed = compile_all(files[0::workers])
for pid in children:
    _, status = os.waitpid(pid, 0)
    if not os.WIFEXITED(status):
        sys.exit("a compile worker was killed (signal %d)" % os.WTERMSIG(status))
    failed += os.WEXITSTATUS(status)
print("Compiled %d modules in %.2f s (%d not compiled: a syntax error, or not Python %d.%d)"
      % (len(files) - failed, time.monotonic() - started, failed, sys.version_info[0], sys.version_info[1]),
      flush=True)
"""


def compile_command(python: str, env: Path, scratch: Path, workers: int) -> list[str]:
    """The compile job's command: ``python`` (the environment's interpreter, not its
    ``bin/python`` link) compiling ``env`` into ``scratch``."""
    return [python, "-I", "-S", "-c", SCRIPT, str(env), str(scratch), str(max(1, workers))]


def adopt_bytecode(scratch: Path, env: Path, owner: int | None) -> int:
    """Move the ``.pyc`` files a compile job wrote below ``scratch`` into ``env``'s
    ``__pycache__`` folders and return how many moved. Only regular files named
    ``*.pyc`` in ``__pycache__`` folders move, and only beside a folder of ``env`` that
    is no link (nor below one); ``owner``: the uid to give them to (None: left as
    written, by an unsandboxed job as the server's user)."""
    real_env = os.path.realpath(env)
    moved = 0
    for folder, dirs, files in os.walk(scratch):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
        if os.path.basename(folder) != "__pycache__":
            continue
        relative = os.path.relpath(os.path.dirname(folder), scratch)
        beside = os.path.join(env, relative)
        if os.path.realpath(beside) != os.path.normpath(os.path.join(real_env, relative)) \
                or not os.path.isdir(beside):
            continue
        cache = os.path.join(beside, "__pycache__")
        if not _folder(cache, owner):
            continue
        for name in files:
            source = os.path.join(folder, name)
            if not name.endswith(".pyc") or not stat.S_ISREG(os.lstat(source).st_mode):
                continue
            if owner is not None:  # as make_readable leaves a build: the server's, read-only to others
                os.chown(source, owner, owner)
                os.chmod(source, 0o644)
            os.rename(source, os.path.join(cache, name))
            moved += 1
    return moved


def mark_compiled(env: Path, text: str) -> None:
    """Write :data:`COMPILED_MARKER` into ``env``."""
    fd = os.open(env / COMPILED_MARKER, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as marker:
        marker.write(text + "\n")


def is_compiled(env: Path) -> bool:
    return (env / COMPILED_MARKER).exists()


def compiling(session: Session) -> set[str]:
    """The environment folders that a compile job (of any node) is compiling now."""
    metas = session.scalars(select(Job.meta).where(
        Job.status == 0, Job.kind == "build", Job.key.startswith(f"{KIND}-")
    ))
    return {str(meta["environment"]) for meta in metas if meta and meta.get("environment")}


def _folder(path: str, owner: int | None) -> bool:
    """Whether ``path`` is (now) a real folder, made by the server when it was missing."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        pass
    os.mkdir(path, 0o755)
    if owner is not None:
        os.chown(path, owner, owner)
    return True
