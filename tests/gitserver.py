"""Real git repositories served over smart HTTP on loopback, for tests and benchmarks.

:class:`GitHttpServer` is a small threaded HTTP server that runs ``git http-backend``
(git's own CGI program) for each request, optionally behind HTTP Basic auth.
:class:`Repo` makes a bare repository under it and commits to it through a work tree,
with real ``git`` commands.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.org",
    "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.org",
    "GIT_TERMINAL_PROMPT": "0",
}


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr}")
    return done.stdout


class GitHttpServer:
    """``git http-backend`` for every repository under ``root``; ``auth`` = (user, password)
    makes it answer 401 to requests without them; ``protocol_v2=False`` speaks only git's
    protocol v0 (which refuses to fetch a commit by its id). ``requests`` counts what it served."""

    def __init__(self, root: Path, auth: tuple[str, str] | None = None, protocol_v2: bool = True) -> None:
        self.root = root
        self.protocol_v2 = protocol_v2
        self.auth = auth
        self.requests: list[str] = []
        self.auth_headers: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                self._cgi()

            def do_POST(self) -> None:
                self._cgi()

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _cgi(self) -> None:
                outer.requests.append(f"{self.command} {self.path}")
                given = self.headers.get("Authorization", "")
                outer.auth_headers.append(given)
                if outer.auth is not None:
                    wanted = "Basic " + base64.b64encode(":".join(outer.auth).encode()).decode()
                    if given != wanted:
                        self.send_response(401)
                        self.send_header("WWW-Authenticate", 'Basic realm="git"')
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                path, _, query = self.path.partition("?")
                body = self._body()
                env = {
                    "PATH": os.environ["PATH"],
                    "GIT_PROJECT_ROOT": str(outer.root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
                    "REQUEST_METHOD": self.command,
                    "PATH_INFO": path,
                    "QUERY_STRING": query,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                    "REMOTE_ADDR": "127.0.0.1",
                    "REMOTE_USER": outer.auth[0] if outer.auth else "",
                    "GIT_PROTOCOL": self.headers.get("Git-Protocol", "") if outer.protocol_v2 else "",
                    "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                }
                done = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, timeout=60)
                head, _, payload = done.stdout.partition(b"\r\n\r\n")
                if not _:
                    head, _, payload = done.stdout.partition(b"\n\n")
                status = 200
                headers = []
                for line in head.decode("latin-1").splitlines():
                    name, _, value = line.partition(":")
                    if name.lower() == "status":
                        status = int(value.strip().split()[0])
                    elif name:
                        headers.append((name, value.strip()))
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}.git"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class Repo:
    """A bare repository ``<root>/<name>.git`` and a work tree that commits and pushes to it."""

    def __init__(self, root: Path, name: str, branch: str = "main") -> None:
        self.bare = root / f"{name}.git"
        self.work = root / f"{name}-work"
        self.branch = branch
        self.bare.mkdir(parents=True)
        git("init", "--quiet", "--bare", "-b", branch, ".", cwd=self.bare)
        self.work.mkdir()
        git("init", "--quiet", "-b", branch, ".", cwd=self.work)
        git("remote", "add", "origin", str(self.bare), cwd=self.work)

    def commit(self, files: dict[str, str | None], message: str = "change", branch: str | None = None) -> str:
        """Write (or, with None, delete) ``files``, commit, push; returns the commit."""
        for name, text in files.items():
            path = self.work / name
            if text is None:
                if path.is_symlink() or path.is_file():
                    path.unlink()
                elif path.exists():
                    shutil.rmtree(path)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        git("add", "-A", ".", cwd=self.work)
        git("commit", "--quiet", "--allow-empty", "-m", message, cwd=self.work)
        git("push", "--quiet", "origin", f"HEAD:refs/heads/{branch or self.branch}", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work).strip()

    def symlink(self, name: str, target: str) -> str:
        (self.work / name).symlink_to(target)
        return self.commit({}, f"link {name}")


def static_site(text: str, prefix: str = "") -> dict[str, str | None]:
    """A static site (index.html + manifest.json) as files for :meth:`Repo.commit`."""
    manifest = {
        "version": 1,
        "metadata": {"appmode": "static", "primary_html": "index.html", "entrypoint": "index.html"},
        "files": {"index.html": {}},
    }
    return {f"{prefix}index.html": text, f"{prefix}manifest.json": json.dumps(manifest)}


FASTAPI_MANIFEST = {
    "version": 1,
    "locale": "en_US.UTF-8",
    "metadata": {"appmode": "python-fastapi", "entrypoint": "app"},
    "python": {
        "version": "3.11.7",
        "package_manager": {"name": "pip", "version": "23.2.1", "package_file": "requirements.txt"},
    },
    "files": {"requirements.txt": {}, "app.py": {}},
}


def fastapi_app(answer: str) -> dict[str, str | None]:
    app = f"from fastapi import FastAPI\napp = FastAPI()\n@app.get('/')\ndef root():\n    return {{'v': {answer!r}}}\n"
    return {"app.py": app, "requirements.txt": "fastapi\n", "manifest.json": json.dumps(FASTAPI_MANIFEST)}
