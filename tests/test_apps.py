"""Launch plans for every Python app mode, and real apps behind a Podium-like proxy.

The unit tests pin each mode's command, environment, prefix handling and job tag. The
integration tests build a venv per framework with uv (the bundle's one requirement
plus ``RUNTIME_REQUIREMENTS``), start the app from its launch plan in a session of its
own, and reach it only through :class:`PrefixProxy`, a small aiohttp proxy that serves
``/content/<guid>/`` the way Podium does: with or without stripping the prefix, as
the plan says, passing the viewer's ``Host`` and adding ``X-Forwarded-*`` headers. The
tests' WebSocket clients send an ``Origin`` of another host, as a page embedding the
content would, so the apps' origin checks are exercised.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
from aiohttp import web
from tests.helpers import alive
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect
from websockets.typing import Origin, Subprotocol

from podium.apps import RUNTIME_REQUIREMENTS, LaunchPlan, launch_plan, runner_source

GUID = "3f2a5c1e-8d4b-4e6f-9a7c-0b1d2e3f4a5b"
BASE = f"/content/{GUID}/"
DRAFT_BASE = f"/content/{GUID}/_bundle12/"
PY = "/envs/e1/bin/python"
RUNNER = "/runtime/podium_runner.py"
RUNNER_FILE = str(Path(__file__).parents[1] / "src" / "podium" / "apps" / "runner.py")
PYTHON_MODES = [
    "python-fastapi", "python-api", "python-dash", "python-streamlit", "python-shiny",
    "python-bokeh", "python-panel", "python-gradio", "jupyter-voila",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def plan(mode: str, entrypoint: str | None = None, base: str = BASE) -> LaunchPlan:
    return launch_plan(mode, entrypoint, PY, RUNNER, 8123, base)


# ---------------------------------------------------------------------------------------
# launch_plan: one golden plan per mode


def test_launch_plan_fastapi_runs_uvicorn_with_root_path() -> None:
    assert plan("python-fastapi") == LaunchPlan(
        [PY, RUNNER, "asgi", "--entrypoint", "app", "--port", "8123", "--prefix", BASE[:-1]],
        {"PYTHONUNBUFFERED": "1"},
        strip_prefix=True,
        tag="run_fastapi_app",
    )


def test_launch_plan_api_runs_gunicorn_with_script_name() -> None:
    assert plan("python-api", "app:application") == LaunchPlan(
        [PY, RUNNER, "wsgi", "--entrypoint", "app:application", "--port", "8123",
         "--prefix", BASE[:-1]],
        {"PYTHONUNBUFFERED": "1"},
        strip_prefix=True,
        tag="run_python_api",
    )


def test_launch_plan_dash_sets_pathname_prefixes() -> None:
    assert plan("python-dash", "app:app", DRAFT_BASE) == LaunchPlan(
        [PY, RUNNER, "dash", "--entrypoint", "app:app", "--port", "8123",
         "--prefix", DRAFT_BASE[:-1]],
        {
            "PYTHONUNBUFFERED": "1",
            "DASH_REQUESTS_PATHNAME_PREFIX": DRAFT_BASE,
            "DASH_ROUTES_PATHNAME_PREFIX": "/",
        },
        strip_prefix=True,
        tag="run_dash_app",
    )


def test_launch_plan_unix_socket_only_for_servers_that_listen_on_two_sockets() -> None:
    sock = "/data/run/sockets/run-x.sock"
    for mode, server in (("python-fastapi", "asgi"), ("python-api", "wsgi"), ("python-dash", "dash")):
        the_plan = launch_plan(mode, None, PY, RUNNER, 8123, BASE, sock)
        assert the_plan.unix_socket == sock
        assert the_plan.argv[2] == server
        assert the_plan.argv[the_plan.argv.index("--unix-socket") + 1] == sock
        assert "--port" in the_plan.argv  # TCP stays: readiness probes and other clients
    for mode in ("python-streamlit", "python-shiny", "python-bokeh", "python-panel", "python-gradio", "jupyter-voila"):
        the_plan = launch_plan(mode, None if mode != "jupyter-voila" else "app.ipynb", PY, RUNNER, 8123, BASE, sock)
        assert the_plan.unix_socket is None and sock not in the_plan.argv


def test_launch_plan_handoff_socket_only_for_asgi() -> None:
    """Only the runner's uvicorn can take a connected socket; every other server is tunnelled."""
    sock, handoff = "/data/run/sockets/run-x.sock", "/data/run/sockets/run-x.handoff.sock"
    the_plan = launch_plan("python-fastapi", None, PY, RUNNER, 8123, BASE, sock, handoff_socket=handoff)
    assert the_plan.handoff_socket == handoff
    assert the_plan.argv[the_plan.argv.index("--handoff-socket") + 1] == handoff
    for mode in ("python-api", "python-dash", "python-streamlit", "python-shiny", "python-bokeh",
                 "python-panel", "python-gradio", "jupyter-voila"):
        the_plan = launch_plan(mode, None if mode != "jupyter-voila" else "app.ipynb", PY, RUNNER, 8123, BASE,
                               sock, handoff_socket=handoff)
        assert the_plan.handoff_socket is None and handoff not in the_plan.argv


def test_launch_plan_binds_the_given_host_on_the_command_line() -> None:
    # On Kubernetes the scheduler passes $(POD_IP), which the kubelet expands.
    for mode, expected in (("python-streamlit", ["--server.address", "$(POD_IP)"]),
                           ("python-panel", ["--address", "$(POD_IP)"]),
                           ("jupyter-voila", ["--Voila.ip=$(POD_IP)"])):
        argv = launch_plan(mode, "app.ipynb" if mode == "jupyter-voila" else None, PY, RUNNER, 8123,
                           BASE, host="$(POD_IP)").argv
        assert any(argv[i:i + len(expected)] == expected for i in range(len(argv))), argv
        assert "127.0.0.1" not in " ".join(argv)


def test_launch_plan_streamlit_serves_under_base_url_path() -> None:
    assert plan("python-streamlit") == LaunchPlan(
        [
            PY, "-m", "streamlit", "run", "app.py",
            "--server.address", "127.0.0.1",
            "--server.port", "8123",
            "--server.baseUrlPath", BASE.strip("/"),
            "--server.headless", "true",
            "--server.fileWatcherType", "none",
            "--server.runOnSave", "false",
            "--server.enableCORS", "false",
            "--server.enableXsrfProtection", "false",
            "--browser.gatherUsageStats", "false",
            "--global.developmentMode", "false",
        ],
        {"PYTHONUNBUFFERED": "1"},
        strip_prefix=False,
        tag="run_streamlit",
    )


def test_launch_plan_shiny_runs_runner_with_root_path() -> None:
    assert plan("python-shiny") == LaunchPlan(
        [PY, RUNNER, "shiny", "--entrypoint", "app", "--port", "8123", "--prefix", BASE[:-1]],
        {"PYTHONUNBUFFERED": "1"},
        strip_prefix=True,
        tag="run_pyshiny_app",
    )


def test_launch_plan_bokeh_mounts_the_app_at_the_prefix() -> None:
    assert plan("python-bokeh") == LaunchPlan(
        [PY, RUNNER, "bokeh", "--entrypoint", "app.py", "--port", "8123", "--prefix", BASE[:-1]],
        {"PYTHONUNBUFFERED": "1"},
        strip_prefix=False,
        tag="run_bokeh_app",
    )


def test_launch_plan_panel_serves_the_app_as_index() -> None:
    assert plan("python-panel", "dashboards/sales.ipynb") == LaunchPlan(
        [
            PY, "-m", "panel", "serve", "dashboards/sales.ipynb",
            "--address", "127.0.0.1",
            "--port", "8123",
            "--prefix", BASE[:-1],
            "--allow-websocket-origin", "*",
            "--use-xheaders",
            "--index", "sales",
        ],
        {"PYTHONUNBUFFERED": "1"},
        strip_prefix=False,
        tag="run_panel_app",
    )


def test_launch_plan_gradio_runs_runner_without_analytics() -> None:
    assert plan("python-gradio", "app:demo") == LaunchPlan(
        [PY, RUNNER, "gradio", "--entrypoint", "app:demo", "--port", "8123",
         "--prefix", BASE[:-1]],
        {"PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False"},
        strip_prefix=True,
        tag="run_gradio_app",
    )


def test_launch_plan_voila_serves_the_notebook_under_base_url() -> None:
    assert plan("jupyter-voila", "hello.ipynb") == LaunchPlan(
        [
            PY, "-m", "voila", "hello.ipynb", "--no-browser",
            "--Voila.ip=127.0.0.1", "--port=8123", f"--Voila.base_url={BASE}",
            "--Voila.tornado_settings=allow_origin=*",
        ],
        {"PYTHONUNBUFFERED": "1"},
        strip_prefix=False,
        tag="run_voila_app",
    )


def test_launch_plan_voila_without_entrypoint_serves_the_directory() -> None:
    assert plan("jupyter-voila").argv[:4] == [PY, "-m", "voila", "--no-browser"]


@pytest.mark.parametrize("mode", ["python-fastapi", "python-api", "python-dash", "python-shiny"])
def test_launch_plan_module_modes_default_entrypoint_is_app(mode: str) -> None:
    argv = plan(mode, None).argv
    assert argv[argv.index("--entrypoint") + 1] == "app"


@pytest.mark.parametrize(
    ("entrypoint", "expected"),
    [("app", "app"), ("app.py", "app"), ("pkg.main:server", "pkg.main:server"),
     ("app:app.server", "app:app.server"), ("src/app.py", "src.app")],
)
def test_launch_plan_module_entrypoints_are_normalised(entrypoint: str, expected: str) -> None:
    argv = plan("python-api", entrypoint).argv
    assert argv[argv.index("--entrypoint") + 1] == expected


@pytest.mark.parametrize(
    ("mode", "entrypoint", "expected"),
    [
        ("python-streamlit", None, "app.py"),
        ("python-streamlit", "app", "app.py"),
        ("python-streamlit", "app:app", "app.py"),
        ("python-streamlit", "pages.home", "pages/home.py"),
        ("python-streamlit", "streamlit_app.py", "streamlit_app.py"),
        ("python-bokeh", "plots/main.ipynb", "plots/main.ipynb"),
        ("python-panel", "report.md", "report.md"),
        ("jupyter-voila", "nb/hello.ipynb", "nb/hello.ipynb"),
    ],
)
def test_launch_plan_file_entrypoints_name_a_bundle_file(
    mode: str, entrypoint: str | None, expected: str
) -> None:
    assert expected in plan(mode, entrypoint).argv


@pytest.mark.parametrize("mode", PYTHON_MODES)
def test_launch_plan_every_mode_has_a_tag_and_runtime_requirements(mode: str) -> None:
    result = plan(mode)
    assert result.tag.startswith("run_")
    assert result.argv[0] == PY
    assert str(8123) in " ".join(result.argv)
    assert isinstance(RUNTIME_REQUIREMENTS[mode], list)


def test_runtime_requirements_cover_exactly_the_python_modes() -> None:
    assert sorted(RUNTIME_REQUIREMENTS) == sorted(PYTHON_MODES)


@pytest.mark.parametrize(
    "mode", ["static", "quarto-static", "jupyter-static", "rmd-static", "rmd-shiny", "nodejs",
             "unknown", "python-flask", ""],
)
def test_launch_plan_rejects_modes_that_are_not_python_apps(mode: str) -> None:
    with pytest.raises(ValueError, match="cannot be run as a Python or R app"):
        plan(mode)


@pytest.mark.parametrize(
    "mode, call, tag",
    [("shiny", "shiny::runApp('.', host = host, port = port", "run_app"),
     ("api", "plumber::pr_run(plumber::plumb(dir = '.'), host = host, port = port)", "run_api")],
)
def test_launch_plan_r_modes_run_r_with_address_as_arguments(mode: str, call: str, tag: str) -> None:
    r = "/opt/R/4.2.2/bin/R"
    result = launch_plan(mode, None, r, RUNNER, 8123, BASE, "/run/x.sock", "$(POD_IP)")
    assert result.argv[:5] == [r, "--no-echo", "--no-restore", "--no-save", "-e"]
    assert call in result.argv[5]
    # The address is passed as arguments after --args, never pasted into R code.
    assert result.argv[6:] == ["--args", "$(POD_IP)", "8123"]
    assert result.strip_prefix and result.tag == tag and result.unix_socket is None and result.env == {}


@pytest.mark.parametrize(
    "entrypoint", ["", "a:b:c", "app:", ":app", "1app", "app-x", "app:1x", "../app",
                   "app; rm -rf /", "-m", "app:app()"],
)
def test_launch_plan_rejects_bad_module_entrypoints(entrypoint: str) -> None:
    with pytest.raises(ValueError, match="entrypoint"):
        plan("python-fastapi", entrypoint)


@pytest.mark.parametrize(
    ("mode", "entrypoint"),
    [
        ("python-streamlit", "../app.py"),
        ("python-streamlit", "/etc/app.py"),
        ("python-streamlit", "a//b.py"),
        ("python-streamlit", "--server.port=1.py"),
        ("python-streamlit", "app.ipynb"),
        ("python-streamlit", "my app"),
        ("python-bokeh", "plots/./main.py"),
        ("jupyter-voila", "notes.py"),
        ("jupyter-voila", "../x.ipynb"),
        ("python-panel", "a\\b.py"),
    ],
)
def test_launch_plan_rejects_bad_file_entrypoints(mode: str, entrypoint: str) -> None:
    with pytest.raises(ValueError, match="entrypoint"):
        plan(mode, entrypoint)


@pytest.mark.parametrize(
    "base", ["", "/", "content/x/", f"/content/{GUID}", "/content/a b/", "/content/../x/",
             "/content/./", "//"],
)
def test_launch_plan_rejects_malformed_base_paths(base: str) -> None:
    with pytest.raises(ValueError, match="base path"):
        plan("python-fastapi", base=base)


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_launch_plan_rejects_ports_out_of_range(port: int) -> None:
    with pytest.raises(ValueError, match="port"):
        launch_plan("python-fastapi", None, PY, RUNNER, port, BASE)


# ---------------------------------------------------------------------------------------
# the runner, in this interpreter (it is stdlib-only)


def test_runner_source_imports_only_the_stdlib_at_module_level() -> None:
    tree = ast.parse(runner_source())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add((node.module or "").partition(".")[0])
    assert names - {"__future__"} <= sys.stdlib_module_names
    assert runner_source() == Path(RUNNER_FILE).read_text()


@pytest.fixture
def runner_module(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """The runner as the server writes it, loaded here; the working directory is a bundle."""
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    (runtime / "podium_runner.py").write_text(runner_source())
    spec = importlib.util.spec_from_file_location("podium_runner", runtime / "podium_runner.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield module
    for name in set(sys.modules) - before:
        del sys.modules[name]


def _bundle_module(tmp_path: Path, source: str) -> str:
    name = "bundle_" + hashlib.sha1(source.encode()).hexdigest()[:10]
    (tmp_path / f"{name}.py").write_text(source)
    return name


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("app = 'a'\napplication = 'b'\n", "a"),
        ("application = 'b'\ndef create_app():\n    return 'c'\n", "b"),
        ("def create_app():\n    return 'c'\ndef make_app():\n    return 'd'\n", "c"),
        ("def make_app():\n    return 'd'\n", "d"),
    ],
)
def test_runner_load_object_tries_connect_default_names_in_order(
    runner_module: Any, tmp_path: Path, source: str, expected: str
) -> None:
    module = _bundle_module(tmp_path, source)
    assert runner_module.load_object(module) == expected


def test_runner_load_object_follows_a_dotted_object(runner_module: Any, tmp_path: Path) -> None:
    module = _bundle_module(tmp_path, "class Dash:\n    server = 'flask'\napp = Dash()\n")
    assert runner_module.load_object(f"{module}:app.server") == "flask"


def test_runner_load_object_calls_a_named_factory(runner_module: Any, tmp_path: Path) -> None:
    module = _bundle_module(tmp_path, "def create_app():\n    return 'made'\n")
    assert runner_module.load_object(f"{module}:create_app") == "made"


@pytest.mark.parametrize(
    ("entrypoint", "message"),
    [
        ("no_such_module", "not found in the bundle directory"),
        ("{module}:nope", "has no object 'nope'"),
        ("{module}", "defines none of app, application, create_app, make_app"),
        ("{module}:x:y", "is not 'module' or 'module:object'"),
    ],
)
def test_runner_load_object_explains_what_is_missing(
    runner_module: Any, tmp_path: Path, entrypoint: str, message: str
) -> None:
    module = _bundle_module(tmp_path, "something_else = 1\n")
    with pytest.raises(runner_module.EntrypointError, match=message):
        runner_module.load_object(entrypoint.format(module=module))


def test_runner_load_object_reports_a_missing_dependency_as_itself(
    runner_module: Any, tmp_path: Path
) -> None:
    module = _bundle_module(tmp_path, "import no_such_dependency_podium\napp = 1\n")
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_podium"):
        runner_module.load_object(module)


def test_runner_script_name_middleware_sets_the_public_prefix(runner_module: Any) -> None:
    seen: dict[str, str] = {}

    def app(environ: dict[str, str], start_response: object) -> list[bytes]:
        seen.update(environ)
        return [b""]

    wrapped = runner_module.script_name_middleware(app, "/content/x")
    wrapped({"SCRIPT_NAME": "", "PATH_INFO": "/a"}, None)
    assert (seen["SCRIPT_NAME"], seen["PATH_INFO"]) == ("/content/x", "/a")


def test_runner_exits_2_with_a_message_when_the_entrypoint_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("nothing_here = 1\n")
    done = subprocess.run(
        [sys.executable, RUNNER_FILE, "asgi", "--entrypoint", "app", "--port", str(free_port()),
         "--prefix", BASE[:-1]],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2
    assert "podium: module 'app' defines none of app, application" in done.stderr


# ---------------------------------------------------------------------------------------
# integration: real apps behind a prefix proxy

_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "content-length",
})
_WS_HANDSHAKE = _HOP_BY_HOP | {
    "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
    "sec-websocket-protocol",
}


class PrefixProxy:
    """Public prefixes forwarded to ``127.0.0.1:<port>``, HTTP and WebSocket.

    ``routes`` maps a public prefix (``/content/<guid>/`` or a draft's
    ``/content/<guid>/_bundle<id>/``) to the app's port and whether to strip the whole
    prefix. Runs an aiohttp server and client on an event loop in a thread of its own, so
    tests use ordinary blocking clients. Unknown paths answer 404, an unreachable app 502.
    """

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bool]] = {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="prefix-proxy", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the test proxy did not start")

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._started.set()
        self._loop.run_forever()
        self._loop.close()

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/content/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def close(self) -> None:
        async def stop() -> None:
            await self._runner.cleanup()
            await self._session.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.rel_url.raw_path
        if path + "/" in self.routes:
            raise web.HTTPMovedPermanently(path + "/")
        prefixes = [p for p in self.routes if path.startswith(p)]
        if not prefixes:
            return web.Response(status=404, text="no such content")
        prefix = max(prefixes, key=len)
        port, strip = self.routes[prefix]
        if strip:
            path = path[len(prefix) - 1:]
        url = f"http://127.0.0.1:{port}{path}"
        if request.query_string:
            url += "?" + request.query_string
        forwarded = {
            "Host": request.host,
            "X-Forwarded-Host": request.host,
            "X-Forwarded-Proto": request.scheme,
            "X-Forwarded-For": request.remote or "",
        }
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request, url, forwarded)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers.update(forwarded)
        body = await request.read()
        try:
            upstream = await self._session.request(
                request.method, url, headers=headers, data=body or None, allow_redirects=False
            )
        except aiohttp.ClientConnectionError as exc:
            return web.Response(status=502, text=f"app unreachable: {exc}")
        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in upstream.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    response.headers.add(name, value)
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def _websocket(
        self, request: web.Request, url: str, forwarded: dict[str, str]
    ) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _WS_HANDSHAKE}
        headers.update(forwarded)
        offered = request.headers.get("Sec-WebSocket-Protocol", "")
        protocols = [p.strip() for p in offered.split(",") if p.strip()]
        try:
            upstream = await self._session.ws_connect(url, headers=headers, protocols=protocols)
        except aiohttp.WSServerHandshakeError as exc:
            return web.Response(status=exc.status, text="the app refused the WebSocket")
        except aiohttp.ClientConnectionError as exc:
            return web.Response(status=502, text=f"app unreachable: {exc}")
        viewer = web.WebSocketResponse(protocols=[upstream.protocol] if upstream.protocol else [])
        await viewer.prepare(request)

        async def pump(
            source: aiohttp.ClientWebSocketResponse | web.WebSocketResponse,
            sink: aiohttp.ClientWebSocketResponse | web.WebSocketResponse,
        ) -> None:
            async for message in source:
                if message.type == aiohttp.WSMsgType.TEXT:
                    await sink.send_str(message.data)
                elif message.type == aiohttp.WSMsgType.BINARY:
                    await sink.send_bytes(message.data)
            await sink.close()

        await asyncio.gather(pump(viewer, upstream), pump(upstream, viewer),
                             return_exceptions=True)
        return viewer


@pytest.fixture(scope="session")
def proxy() -> Iterator[PrefixProxy]:
    proxy = PrefixProxy()
    yield proxy
    proxy.close()


@pytest.fixture(scope="session")
def app_venv(tmp_path_factory: pytest.TempPathFactory) -> Callable[[list[str]], str]:
    """A venv with the given packages, built once per package set; returns its python."""
    from uv import find_uv_bin

    root = tmp_path_factory.mktemp("venvs")
    built: dict[tuple[str, ...], str] = {}
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}
    env.pop("VIRTUAL_ENV", None)

    def venv(packages: list[str]) -> str:
        key = tuple(sorted(packages))
        if key not in built:
            target = root / hashlib.sha1(" ".join(key).encode()).hexdigest()[:12]
            uv = find_uv_bin()
            for command in (
                [uv, "venv", "--quiet", "--relocatable", "--python", sys.executable, str(target)],
                [uv, "pip", "install", "--quiet", "--python", str(target / "bin" / "python"),
                 *key],
            ):
                done = subprocess.run(command, env=env, capture_output=True, text=True,
                                      timeout=600, check=False)
                if done.returncode != 0:
                    message = f"uv could not build a venv with {' '.join(key)}:\n{done.stderr}"
                    if os.environ.get("CI"):
                        pytest.fail(message)
                    pytest.skip(message)
            built[key] = str(target / "bin" / "python")
        return built[key]

    return venv


@dataclass
class RunningApp:
    plan: LaunchPlan
    process: subprocess.Popen[bytes]
    base: str  # the public prefix
    url: str  # the public URL through the proxy, ending with '/'
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str = "", **kwargs: object) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return requests.get(self.url + path, **kwargs)  # type: ignore[arg-type]

    def ws_url(self, path: str) -> str:
        return "ws" + self.url.removeprefix("http") + path


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc), whatever session it is in."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _stop(app: RunningApp) -> list[int]:
    """Stop the app's process group (TERM, then KILL); return the pids that outlived it."""
    descendants = _children(app.process.pid)
    try:
        os.killpg(app.process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        app.process.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(app.process.pid, signal.SIGKILL)
        app.process.wait(5)
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in descendants) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in descendants if alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


@pytest.fixture
def start_app(
    proxy: PrefixProxy, app_venv: Callable[[list[str]], str], tmp_path: Path
) -> Iterator[Callable[..., RunningApp]]:
    """Start a bundle from its launch plan behind the proxy and wait until it answers."""
    started: list[RunningApp] = []

    def start(
        mode: str,
        files: dict[str, str],
        requirements: list[str],
        entrypoint: str | None = None,
        base: str = BASE,
        ready_timeout: float = 90,
    ) -> RunningApp:
        bundle = tmp_path / "bundle"
        bundle.mkdir()
        for name, text in files.items():
            (bundle / name).parent.mkdir(parents=True, exist_ok=True)
            (bundle / name).write_text(text)
        python = app_venv([*requirements, *RUNTIME_REQUIREMENTS[mode]])
        runtime = tmp_path / "runtime"
        runtime.mkdir()
        runner = runtime / "podium_runner.py"
        runner.write_text(runner_source())
        port = free_port()
        the_plan = launch_plan(mode, entrypoint, python, str(runner), port, base)
        proxy.routes[base] = (port, the_plan.strip_prefix)
        log_path = tmp_path / "app.log"
        env = {**os.environ, **the_plan.env, "PORT": str(port), "HOME": str(tmp_path)}
        env.pop("VIRTUAL_ENV", None)
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                the_plan.argv, cwd=bundle, env=env, stdin=subprocess.DEVNULL,
                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
            )
        app = RunningApp(the_plan, process, base, proxy.url + base, log_path)
        started.append(app)
        # Readiness is an HTTP answer from the app, not an open port.
        deadline = time.monotonic() + ready_timeout
        while True:
            if process.poll() is not None:
                pytest.fail(f"{mode} exited with {process.returncode}:\n{app.log()}")
            try:
                if app.get(timeout=5).status_code not in (502, 503):
                    return app
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{mode} did not answer within {ready_timeout} s:\n{app.log()}")
            time.sleep(0.1)

    yield start
    for app in started:
        proxy.routes.pop(app.base, None)
        left = _stop(app)
        assert not left, f"processes outlived the app's process group: {left}\n{app.log()}"


def _websocket(url: str, subprotocols: list[str] | None = None) -> ClientConnection:
    """A WebSocket as a browser on another host than the app's would open it."""
    return ws_connect(
        url,
        origin=Origin("https://viewer.example"),
        subprotocols=[Subprotocol(p) for p in subprotocols] if subprotocols else None,
        open_timeout=10,
    )


def _links(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


FASTAPI_APP = """\
from fastapi import FastAPI, WebSocket

app = FastAPI()

@app.get("/")
def root():
    return {"hello": "world"}

@app.get("/items/")
def items():
    return ["one"]

@app.websocket("/echo")
async def echo(websocket: WebSocket):
    await websocket.accept()
    await websocket.send_text("echo " + await websocket.receive_text())
    await websocket.close()
"""


@pytest.mark.integration
@pytest.mark.parametrize("base", [BASE, DRAFT_BASE], ids=["active", "draft"])
def test_fastapi_app_serves_json_docs_and_websockets_under_the_prefix(
    start_app: Callable[..., RunningApp], base: str
) -> None:
    app = start_app("python-fastapi", {"app.py": FASTAPI_APP}, ["fastapi"], base=base)
    assert app.get().json() == {"hello": "world"}
    docs = app.get("docs")
    assert docs.status_code == 200
    assert f"'{base}openapi.json'" in docs.text
    assert app.get("openapi.json").json()["info"]["title"] == "FastAPI"
    moved = app.get("items", allow_redirects=False)
    assert moved.status_code == 307
    assert moved.headers["Location"] == f"{app.url}items/"
    assert app.get("items").json() == ["one"]
    with _websocket(app.ws_url("echo")) as ws:
        ws.send("podium")
        assert ws.recv(timeout=10) == "echo podium"


FLASK_APP = """\
from flask import Flask, redirect, url_for

application = Flask(__name__)

@application.route("/")
def index():
    return (f'<a href="{url_for("other")}">other</a> '
            f'<img src="{url_for("static", filename="logo.txt")}">')

@application.route("/other")
def other():
    return "the other page"

@application.route("/go")
def go():
    return redirect(url_for("other"))
"""


@pytest.mark.integration
def test_flask_app_builds_links_under_the_prefix(start_app: Callable[..., RunningApp]) -> None:
    app = start_app(
        "python-api", {"app.py": FLASK_APP, "static/logo.txt": "logo"}, ["flask"]
    )
    links = _links(app.get().text)
    assert links == [f"{BASE}other", f"{BASE}static/logo.txt"]
    origin = app.url.removesuffix(BASE)
    assert requests.get(origin + links[0], timeout=10).text == "the other page"
    assert requests.get(origin + links[1], timeout=10).text == "logo"
    moved = app.get("go", allow_redirects=False)
    assert moved.status_code == 302
    assert moved.headers["Location"].endswith(f"{BASE}other")


@pytest.mark.integration
def test_wsgi_runner_stops_instead_of_respawning_when_the_entrypoint_is_wrong(
    app_venv: Callable[[list[str]], str], tmp_path: Path
) -> None:
    (tmp_path / "app.py").write_text("import flask\nnot_an_app = 1\n")
    python = app_venv(["flask", *RUNTIME_REQUIREMENTS["python-api"]])
    the_plan = launch_plan("python-api", "app", python, RUNNER_FILE, free_port(), BASE)
    done = subprocess.run(
        the_plan.argv, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, **the_plan.env, "HOME": str(tmp_path)}, start_new_session=True,
    )
    assert done.returncode != 0
    assert "podium: module 'app' defines none of app, application" in done.stdout + done.stderr


DASH_APP = """\
from dash import Dash, Input, Output, dcc, html

app = Dash(__name__)
app.layout = html.Div([dcc.Input(id="name", value="x"), html.Div(id="greeting")])

@app.callback(Output("greeting", "children"), Input("name", "value"))
def greet(name):
    return f"hello {name}"
"""


@pytest.mark.integration
def test_dash_app_serves_assets_layout_and_callbacks_under_the_prefix(
    start_app: Callable[..., RunningApp],
) -> None:
    app = start_app(
        "python-dash", {"app.py": DASH_APP, "assets/style.css": "body { color: red }"}, ["dash"]
    )
    page = app.get().text
    origin = app.url.removesuffix(BASE)
    scripts = [link for link in _links(page) if "_dash-component-suites" in link]
    assert scripts and all(link.startswith(f"{BASE}_dash-component-suites/") for link in scripts)
    assert requests.get(origin + scripts[0], timeout=10).status_code == 200
    css = next(link for link in _links(page) if "/assets/style.css" in link)
    assert css.startswith(f"{BASE}assets/style.css")
    assert "color: red" in requests.get(origin + css, timeout=10).text
    assert app.get("_dash-layout").json()["props"]["children"][0]["props"]["id"] == "name"
    callback = requests.post(
        app.url + "_dash-update-component",
        json={
            "output": "greeting.children",
            "outputs": {"id": "greeting", "property": "children"},
            "inputs": [{"id": "name", "property": "value", "value": "podium"}],
            "changedPropIds": ["name.value"],
            "state": [],
        },
        timeout=30,
    )
    assert callback.status_code == 200, callback.text
    assert callback.json()["response"]["greeting"]["children"] == "hello podium"


STREAMLIT_APP = """\
import streamlit as st

st.title("Hello from Streamlit")
"""


@pytest.mark.integration
@pytest.mark.parametrize("base", [BASE, DRAFT_BASE], ids=["active", "draft"])
def test_streamlit_app_loads_and_its_websocket_upgrades_under_the_prefix(
    start_app: Callable[..., RunningApp], base: str
) -> None:
    app = start_app("python-streamlit", {"app.py": STREAMLIT_APP}, ["streamlit"], base=base)
    page = app.get()
    assert page.status_code == 200
    script = next(link for link in _links(page.text) if link.endswith(".js"))
    assert app.get(script.removeprefix("./")).status_code == 200
    assert app.get("_stcore/health").text == "ok"
    with _websocket(app.ws_url("_stcore/stream"), ["streamlit"]) as ws:
        assert ws.response is not None and ws.response.status_code == 101


SHINY_APP = """\
from shiny import App, render, ui

app_ui = ui.page_fluid(ui.input_text("name", "Name", "x"), ui.output_text("greeting"))

def server(input, output, session):
    @render.text
    def greeting():
        return "hello " + input.name()

app = App(app_ui, server)
"""


SHINY_EXPRESS_APP = """\
from shiny.express import input, render, ui

ui.input_text("name", "Name", "x")

@render.text
def greeting():
    return "hello " + input.name()
"""


@pytest.mark.integration
@pytest.mark.parametrize("source", [SHINY_APP, SHINY_EXPRESS_APP], ids=["core", "express"])
def test_shiny_app_serves_assets_and_its_session_under_the_prefix(
    start_app: Callable[..., RunningApp], source: str
) -> None:
    app = start_app("python-shiny", {"app.py": source}, ["shiny"])
    script = next(link for link in _links(app.get().text) if link.endswith("shiny.js"))
    assert app.get(script).status_code == 200
    with _websocket(app.ws_url("websocket/")) as ws:
        init = {"name": "podium", ".clientdata_output_greeting_hidden": False}
        ws.send(json.dumps({"method": "init", "data": init}))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            message = json.loads(ws.recv(timeout=20))
            if "greeting" in message.get("values", {}):
                assert message["values"]["greeting"] == "hello podium"
                break
        else:
            pytest.fail("Shiny sent no value for the output")


def _bokeh_session(app: RunningApp, html: str) -> None:
    """Open the Bokeh session WebSocket the page would open, and expect its ACK."""
    bokeh_js = [link for link in _links(html) if "static/js/bokeh.min.js" in link]
    assert bokeh_js
    assert app.get(bokeh_js[0].removeprefix(BASE).removeprefix("./")).status_code == 200
    token = re.search(r'"token":"([^"]+)"', html)
    assert token
    with _websocket(app.ws_url("ws"), ["bokeh", token.group(1)]) as ws:
        assert json.loads(ws.recv(timeout=20))["msgtype"] == "ACK"


@pytest.mark.integration
def test_bokeh_app_is_served_at_the_prefix_with_its_session(
    start_app: Callable[..., RunningApp],
) -> None:
    source = "from bokeh.io import curdoc\nfrom bokeh.models import Div\n" \
             "curdoc().add_root(Div(text='hello bokeh'))\n"
    app = start_app("python-bokeh", {"app.py": source}, ["bokeh"])
    page = app.get()
    assert page.status_code == 200
    _bokeh_session(app, page.text)


@pytest.mark.integration
def test_panel_app_is_served_at_the_prefix_with_its_session(
    start_app: Callable[..., RunningApp],
) -> None:
    source = "import panel as pn\npn.panel('hello panel').servable()\n"
    app = start_app("python-panel", {"app.py": source}, ["panel"])
    page = app.get()
    assert page.status_code == 200
    _bokeh_session(app, page.text)


GRADIO_APP = """\
import gradio as gr

def greet(name):
    return "hello " + name

demo = gr.Interface(fn=greet, inputs="text", outputs="text")

if __name__ == "__main__":
    demo.launch()
"""


@pytest.mark.integration
def test_gradio_app_knows_its_public_root_and_answers_api_calls(
    start_app: Callable[..., RunningApp],
) -> None:
    app = start_app("python-gradio", {"app.py": GRADIO_APP}, ["gradio"])
    assert app.get("config").json()["root"].endswith(BASE[:-1])
    endpoint = next(iter(app.get("gradio_api/info").json()["named_endpoints"])).strip("/")
    call = requests.post(f"{app.url}gradio_api/call/{endpoint}", json={"data": ["podium"]},
                         timeout=30)
    assert call.status_code == 200, call.text
    result = app.get(f"gradio_api/call/{endpoint}/{call.json()['event_id']}")
    assert "hello podium" in result.text


NOTEBOOK = json.dumps({
    "cells": [{"cell_type": "code", "execution_count": None, "id": "c1", "metadata": {},
               "outputs": [], "source": ["print('hello voila')"]}],
    "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                "name": "python3"}},
    "nbformat": 4, "nbformat_minor": 5,
})


@pytest.mark.integration
def test_voila_notebook_renders_and_its_kernel_websocket_opens_under_the_prefix(
    start_app: Callable[..., RunningApp],
) -> None:
    app = start_app("jupyter-voila", {"hello.ipynb": NOTEBOOK}, ["voila"], "hello.ipynb")
    page = app.get()
    assert page.status_code == 200
    assert "hello voila" in page.text
    assert f'src="{BASE}voila/static/voila.js"' in page.text
    assert app.get("voila/static/voila.js").status_code == 200
    kernel = re.search(r'"kernelId": "([^"]+)"', page.text)
    assert kernel
    with _websocket(app.ws_url(f"api/kernels/{kernel.group(1)}/channels")) as ws:
        assert ws.response is not None and ws.response.status_code == 101


_LOOP_APP = """
import asyncio


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    loop = type(asyncio.get_running_loop()).__module__
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": loop.encode()})
"""


@pytest.mark.parametrize("asked", [False, True])
def test_runner_asgi_runs_on_uvloop_without_an_access_log_unless_asked(tmp_path: Path, asked: bool) -> None:
    """ASGI content runs with the fastest server settings its environment allows (this
    test's environment has uvloop and httptools), and logs no line per request unless
    PODIUM_ACCESS_LOG=1 asks for it."""
    runner = tmp_path / "podium_runner.py"
    runner.write_text(runner_source())
    (tmp_path / "loopapp.py").write_text(_LOOP_APP)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PODIUM_ACCESS_LOG"}
    if asked:
        env["PODIUM_ACCESS_LOG"] = "1"
    log_path = tmp_path / "app.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, str(runner), "asgi", "--entrypoint", "loopapp", "--port", str(port),
             "--prefix", "/content/x"],
            cwd=tmp_path, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/hello", timeout=5)
                break
            except requests.ConnectionError:
                assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.05)
        assert answer.status_code == 200 and answer.text.startswith("uvloop")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)
    logged = "/hello HTTP/1.1\" 200" in log_path.read_text()
    assert logged is asked, log_path.read_text()
