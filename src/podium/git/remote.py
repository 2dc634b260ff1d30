"""Running git against a remote: the one place Podium starts ``git``.

Every command runs with no terminal prompt, no user or system git config, only the
allowed protocols, and a timeout (setting ``git_timeout_seconds``). Credentials never
appear on a command line: they travel in the child's environment as an
``http.<origin>/.extraHeader`` config entry (``GIT_CONFIG_COUNT``/``KEY``/``VALUE``),
scoped to the repository's origin, so they are absent from process listings and sent
to no other host. Output that could echo a URL is scrubbed of userinfo before it is
shown. Every failure becomes a :class:`GitError` whose message is safe to show the
publisher and says what to fix.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_SHA_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_USERINFO_RE = re.compile(r"(\w+://)[^/@\s]*@")


class GitError(Exception):
    """A git operation that failed; ``message`` is safe to show the publisher."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class GitAuth:
    """HTTP credentials for one host: a username (may be empty for a bare token) and a secret."""

    username: str
    secret: str


def scrub(text: str) -> str:
    """``text`` with any ``user:password@`` in URLs removed."""
    return _USERINFO_RE.sub(r"\1", text)


def url_problem(url: str, allow_local: bool) -> str | None:
    """Why ``url`` may not be used as a repository, or None."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme in ("http", "https"):
        if not parsed.hostname:
            return f"The repository URL {scrub(url)!r} has no host."
        if parsed.username or parsed.password:
            return ("Put no credentials in the repository URL; an administrator configures "
                    "credentials per git host.")
        return None
    if allow_local and (parsed.scheme in ("file", "ssh") or (not parsed.scheme and url.startswith("/"))):
        return None
    return (f"The repository URL {scrub(url)!r} is not http:// or https://; only those are "
            "accepted (an administrator may allow file://, ssh:// and local paths with the "
            "setting git_allow_local_repositories).")


def origin(url: str) -> str:
    """``scheme://host[:port]/`` of an http(s) URL: what credentials are scoped to."""
    parsed = urllib.parse.urlsplit(url)
    return f"{parsed.scheme}://{parsed.netloc}/"


def host_of(url: str) -> str:
    """The host[:port] credentials are looked up by."""
    return urllib.parse.urlsplit(url).netloc.lower()


class GitRunner:
    """Runs git commands for one server (``git`` found on PATH)."""

    def __init__(self, timeout_seconds: float, allow_local: bool, git: str | None = None) -> None:
        found = git or shutil.which("git")
        self.git = found or "git"
        self.available = found is not None
        self.timeout_seconds = timeout_seconds
        self.allow_local = allow_local

    def _env(self, url: str, auth: GitAuth | None, home: Path) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "LANG": "C",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "/bin/false",
            "SSH_ASKPASS": "/bin/false",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_ALLOW_PROTOCOL": "http:https" + (":file:ssh" if self.allow_local else ""),
            "GIT_SSH_COMMAND": "ssh -o BatchMode=yes",
            "GIT_CONFIG_COUNT": "0",
        }
        if auth is not None and urllib.parse.urlsplit(url).scheme in ("http", "https"):
            token = base64.b64encode(f"{auth.username}:{auth.secret}".encode()).decode()
            env.update({
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": f"http.{origin(url)}.extraHeader",
                "GIT_CONFIG_VALUE_0": f"Authorization: Basic {token}",
            })
        return env

    def _run(
        self, args: list[str], cwd: Path, env: dict[str, str], what: str, max_bytes: int | None = None
    ) -> str:
        """Run git in its own session; on the timeout, or when ``cwd`` grows past
        ``max_bytes``, the whole process group (git and its helpers) is killed."""
        try:
            process = subprocess.Popen(
                [self.git, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL, start_new_session=True, text=True,
            )
        except OSError as exc:
            raise GitError(f"git could not be started on the server: {exc.strerror}.") from None
        deadline = time.monotonic() + self.timeout_seconds
        problem = None
        while True:
            try:
                out, err = process.communicate(timeout=_WATCH_SECONDS)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    problem = (f"{what} took longer than {self.timeout_seconds:g} s and was stopped "
                               "(setting git_timeout_seconds).")
                elif max_bytes is not None and _size(cwd) > max_bytes:
                    problem = _too_large(max_bytes)
                if problem:
                    _kill_group(process)
                    process.communicate()
                    raise GitError(problem) from None
        if process.returncode != 0:
            raise GitError(f"{what} failed: {_explain(scrub(err))}")
        if max_bytes is not None and _size(cwd) > max_bytes:
            raise GitError(_too_large(max_bytes))
        return out

    def check_url(self, url: str) -> None:
        problem = url_problem(url, self.allow_local)
        if problem:
            raise GitError(problem)

    def ls_remote(self, url: str, ref: str, auth: GitAuth | None, scratch: Path) -> str:
        """The commit ``ref`` (a branch, tag or commit) names on the remote; one request,
        no clone."""
        self.check_url(url)
        if _SHA_RE.match(ref):
            return ref
        scratch.mkdir(parents=True, exist_ok=True)
        out = self._run(
            ["ls-remote", "--", url, ref, f"refs/heads/{ref}", f"refs/tags/{ref}", f"refs/tags/{ref}^{{}}"],
            scratch, self._env(url, auth, scratch), f"Looking up {ref!r} in {url}",
        )
        refs: dict[str, str] = {}
        for line in out.splitlines():
            sha, _, name = line.partition("\t")
            if name:
                refs[name] = sha
        for name in (f"refs/tags/{ref}^{{}}", f"refs/heads/{ref}", f"refs/tags/{ref}", ref):
            if name in refs:
                return refs[name]
        raise GitError(f"The repository {url} has no branch or tag {ref!r}.")

    def fetch_tree(
        self, url: str, ref: str, directory: str, auth: GitAuth | None, scratch: Path,
        archive: Path, max_bytes: int, say: Callable[[str], None], max_fetch_bytes: int | None = None,
    ) -> str:
        """Fetch ``ref`` shallowly into ``scratch`` and write ``directory`` at that commit as a
        gzip tar (its contents at the root, at most ``max_bytes``) to ``archive``; returns the
        commit. A fetch that grows past ``max_fetch_bytes`` on disk is stopped."""
        self.check_url(url)
        subdir = normalise_directory(directory)
        repo = scratch / "repo"
        repo.mkdir(parents=True, exist_ok=True)
        env = self._env(url, auth, scratch)
        self._run(["init", "--quiet", "--bare", "."], repo, env, "Preparing the fetch")
        say(f"Fetching {ref!r} from {url}")
        target = "FETCH_HEAD"
        try:
            self._run(
                ["fetch", "--quiet", "--depth", "1", "--no-tags", "--", url, ref],
                repo, env, f"Fetching {ref!r} from {url}", max_bytes=max_fetch_bytes,
            )
        except GitError:
            if not is_commit(ref):
                raise
            # Servers that do not hand out single commits (git's protocol v0 without
            # uploadpack.allowReachableSHA1InWant): fetch the branches and look for it there.
            say("The server does not serve single commits; fetching its branches to find it")
            self._run(
                ["fetch", "--quiet", "--no-tags", "--", url, "+refs/heads/*:refs/remotes/origin/*"],
                repo, env, f"Fetching the branches of {url}", max_bytes=max_fetch_bytes,
            )
            target = ref
        try:
            commit = self._run(
                ["rev-parse", "--verify", "--end-of-options", f"{target}^{{commit}}"], repo, env,
                f"Finding commit {ref}",
            ).strip()
        except GitError:
            raise GitError(f"The repository {url} has no commit {ref} on any branch.") from None
        say(f"Commit {commit}")
        tree = f"{commit}:{subdir}" if subdir else commit
        kind = subprocess.run(
            [self.git, "cat-file", "-t", tree if subdir else f"{commit}^{{tree}}"], cwd=repo, env=env, capture_output=True, text=True,
            timeout=self.timeout_seconds,
        )
        if kind.returncode != 0 or kind.stdout.strip() != "tree":
            raise GitError(f"The directory {directory!r} does not exist at commit {commit[:12]} of {url}.")
        manifest = f"{tree}/manifest.json" if subdir else f"{commit}:manifest.json"
        if subprocess.run(
            [self.git, "cat-file", "-e", manifest], cwd=repo, env=env, capture_output=True,
            timeout=self.timeout_seconds,
        ).returncode != 0:
            where = f"directory {directory!r}" if subdir else "the repository's top directory"
            raise GitError(
                f"There is no manifest.json in {where} at commit {commit[:12]}. Write one with "
                "`rsconnect write-manifest` and commit it."
            )
        say(f"Making a bundle of {directory or '.'} at {commit[:12]}")
        self._archive(repo, env, tree, archive, max_bytes)
        return commit

    def _archive(self, repo: Path, env: dict[str, str], tree: str, archive: Path, max_bytes: int) -> None:
        """``git archive`` of ``tree`` into ``archive``, stopped past ``max_bytes``."""
        with open(archive, "wb") as sink, subprocess.Popen(
            [self.git, "archive", "--format=tar.gz", tree], cwd=repo, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True,
        ) as process:
            assert process.stdout is not None and process.stderr is not None
            size = 0
            try:
                while chunk := process.stdout.read(1 << 16):
                    size += len(chunk)
                    if size > max_bytes:
                        raise GitError(
                            f"The bundle made from the repository is larger than the server's limit "
                            f"of {max_bytes} bytes (setting bundle_max_bytes)."
                        )
                    sink.write(chunk)
                err = process.stderr.read().decode(errors="replace")
                process.wait(self.timeout_seconds)
            except subprocess.TimeoutExpired:
                raise GitError("Making the bundle took too long (setting git_timeout_seconds).") from None
            finally:
                if process.poll() is None:
                    _kill_group(process)
            if process.returncode != 0:
                raise GitError(f"Making the bundle failed: {scrub(err).strip()}")


_WATCH_SECONDS = 0.25


def _size(path: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def _too_large(limit: int) -> str:
    return (f"The repository is larger than the server's limit of {limit} bytes for a fetch "
            "(setting bundle_max_unpacked_bytes); deploy from a smaller repository.")


def _kill_group(process: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def normalise_directory(directory: str) -> str:
    """The repository subdirectory as git names it ("" for the top); refuses escapes."""
    parts = [p for p in directory.replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise GitError(f"The directory {directory!r} leaves the repository.")
    return "/".join(parts)


def is_commit(ref: str) -> bool:
    return bool(_SHA_RE.match(ref))


def _explain(stderr: str) -> str:
    """git's message, with the usual causes said plainly."""
    text = " ".join(line.strip() for line in stderr.strip().splitlines() if line.strip()) or "no output"
    lowered = text.lower()
    if "could not read username" in lowered or "authentication failed" in lowered or "401" in lowered \
            or "403" in lowered:
        return (f"the server refused access ({text}). For a private repository an administrator "
                "adds credentials for its host.")
    if "couldn't find remote ref" in lowered or "not our ref" in lowered:
        return f"no such branch, tag or commit ({text})."
    if "could not resolve host" in lowered or "failed to connect" in lowered or "connection refused" in lowered:
        return f"the repository's host cannot be reached ({text})."
    return text
