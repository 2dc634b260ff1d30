"""How each Python (and R) app mode is started so it works under its public prefix.

Content is served at ``/content/{guid}/`` (drafts at ``/content/{guid}/_bundle{id}/``)
but listens on a loopback port. :func:`launch_plan` is a pure function from the app
mode, the manifest's entrypoint and that public prefix to the command that starts the
content process, and says whether the proxy removes the prefix before forwarding
(``strip_prefix``). Two shapes exist, because frameworks differ:

- The app is told its prefix as a *root path* and sees paths without it
  (``strip_prefix=True``): ASGI (uvicorn ``root_path``), WSGI (``SCRIPT_NAME``), Dash
  (``DASH_REQUESTS_PATHNAME_PREFIX``), Shiny and Gradio.
- The app serves under the full public path itself (``strip_prefix=False``):
  Streamlit (``server.baseUrlPath``), Bokeh and Panel (``--prefix``) and Voila
  (``base_url``). These build absolute asset and WebSocket URLs from the prefix.

What the proxy must do for these plans to work: strip the *whole* public prefix,
draft part included (``/content/<guid>/_bundle12/x`` becomes ``/x``, the prefix alone
becomes ``/``); send ``/content/<guid>`` to ``/content/<guid>/`` first; forward the
viewer's ``Host`` (apps build absolute redirects from it) and add
``X-Forwarded-Proto``/``-Host``/``-For`` (uvicorn, gunicorn, Bokeh and Panel are told
to trust them from any address, since only the proxy reaches the app). The apps
accept WebSocket ``Origin`` headers of any host: the proxy has authorised the viewer.

The ASGI, WSGI, Dash, Shiny, Gradio and Bokeh apps are started by
:mod:`podium.apps.runner`, a stdlib-only script that runs in the content's own venv;
the server writes :func:`runner_source` to ``<runtime>/podium_runner.py``. Streamlit,
Panel and Voila are started by their own command-line interfaces. R Shiny apps and
Plumber APIs are started by R (:mod:`podium.apps.r`).

Entrypoints follow the manifest's ``metadata.entrypoint``: ``module[:object]`` for
Python apps (``None`` means ``app``, as in Connect); a file for Streamlit, Bokeh and
Panel (``app`` means ``app.py``); a notebook for Voila (``None`` serves the bundle
directory's notebooks, rsconnect's multi-notebook mode).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from podium.apps.r import R_TAGS, r_command

__all__ = ["RUNTIME_REQUIREMENTS", "LaunchPlan", "launch_plan", "runner_source", "write_runner"]

HOST = "127.0.0.1"
DEFAULT_ENTRYPOINT = "app"


@dataclass(frozen=True)
class LaunchPlan:
    """The command that starts one content process, and how the proxy must reach it.

    ``argv[0]`` is the venv's python (R for R app modes). ``env`` holds only the variables the launch needs
    (the backend adds ``PORT`` and everything else). ``strip_prefix`` True means the
    proxy forwards ``/content/<guid>/x`` as ``/x``; False means it forwards the path
    unchanged. ``tag`` is Connect's job tag for the mode. ``unix_socket`` is the path
    the process also listens on (see :func:`launch_plan`), or None; ``handoff_socket``
    where it takes WebSocket connections the proxy hands over, or None.
    """

    argv: list[str]
    env: dict[str, str]
    strip_prefix: bool
    tag: str
    unix_socket: str | None = None
    handoff_socket: str | None = None


# Packages added to the package environment so the launch works when the bundle's
# requirements lack them, unpinned so a bundle's own pin wins. Frameworks that bring
# their own server (Streamlit, Shiny, Bokeh, Panel, Gradio) need nothing; Voila needs
# a Python kernel, which it does not depend on.
RUNTIME_REQUIREMENTS: dict[str, list[str]] = {
    # websockets: uvicorn alone refuses WebSocket upgrades.
    "python-fastapi": ["uvicorn", "websockets"],
    "python-api": ["gunicorn"],
    "python-dash": ["gunicorn"],
    "python-streamlit": [],
    "python-shiny": [],
    "python-bokeh": [],
    "python-panel": [],
    "python-gradio": [],
    "jupyter-voila": ["ipykernel"],
}

TAGS: dict[str, str] = {
    "python-fastapi": "run_fastapi_app",
    "python-api": "run_python_api",
    "python-dash": "run_dash_app",
    "python-streamlit": "run_streamlit",
    "python-shiny": "run_pyshiny_app",
    "python-bokeh": "run_bokeh_app",
    "python-panel": "run_panel_app",
    "python-gradio": "run_gradio_app",
    "jupyter-voila": "run_voila_app",
}

_RUNNER_SERVERS = {
    "python-fastapi": "asgi",
    "python-api": "wsgi",
    "python-dash": "dash",
    "python-shiny": "shiny",
    "python-gradio": "gradio",
}
# Runner servers that listen on the TCP port and a unix socket at the same time.
_DUAL_SOCKET_SERVERS = frozenset({"asgi", "wsgi", "dash"})
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_MODULE_ENTRYPOINT = re.compile(rf"{_IDENT}(\.{_IDENT})*(:{_IDENT}(\.{_IDENT})*)?")
_FILE_SUFFIXES = {
    "python-streamlit": (".py",),
    "python-bokeh": (".py", ".ipynb"),
    "python-panel": (".py", ".ipynb", ".md"),
    "jupyter-voila": (".ipynb",),
}


def runner_source() -> str:
    """The text of :mod:`podium.apps.runner`, for ``<runtime>/podium_runner.py``."""
    return resources.files(__package__).joinpath("runner.py").read_text(encoding="utf-8")


def write_runner(directory: Path) -> Path:
    """Write :func:`runner_source` to ``directory/podium_runner.py`` atomically; its path."""
    directory.mkdir(parents=True, exist_ok=True)
    runner = directory / "podium_runner.py"
    tmp = runner.with_suffix(".tmp")
    tmp.write_text(runner_source())
    tmp.replace(runner)
    return runner


def module_entrypoint(entrypoint: str | None) -> str:
    """A validated ``module[:object]``; ``None`` is Connect's default, ``app``."""
    if entrypoint is None:
        return DEFAULT_ENTRYPOINT
    if entrypoint.endswith(".py") and ":" not in entrypoint:
        entrypoint = entrypoint[: -len(".py")].replace("/", ".")
    if not _MODULE_ENTRYPOINT.fullmatch(entrypoint):
        raise ValueError(
            f"entrypoint {entrypoint!r} is not 'module' or 'module:object' "
            "(for example 'app' or 'app:app')"
        )
    return entrypoint


def file_entrypoint(app_mode: str, entrypoint: str | None) -> str:
    """A validated relative file path; a module name ``app`` (or ``app:x``) means ``app.py``."""
    suffixes = _FILE_SUFFIXES[app_mode]
    text = DEFAULT_ENTRYPOINT if entrypoint is None else entrypoint
    known = tuple(s for mode_suffixes in _FILE_SUFFIXES.values() for s in mode_suffixes)
    if not text.endswith(known):
        module = text.partition(":")[0]
        if not re.fullmatch(rf"{_IDENT}(\.{_IDENT})*", module):
            raise ValueError(
                f"entrypoint {text!r} for {app_mode} is neither a module name nor a "
                f"{' or '.join(suffixes)} file"
            )
        text = module.replace(".", "/") + ".py"
    if not text.endswith(suffixes):
        raise ValueError(f"entrypoint {text!r} for {app_mode} must end with {' or '.join(suffixes)}")
    parts = text.split("/")
    if text.startswith(("/", "-")) or any(p in ("", ".", "..") for p in parts) or "\\" in text:
        raise ValueError(f"entrypoint {text!r} must be a relative path inside the bundle")
    return text


def launch_plan(
    app_mode: str,
    entrypoint: str | None,
    python: str,
    runner: str,
    port: int,
    base_path: str,
    unix_socket: str | None = None,
    host: str = HOST,
    handoff_socket: str | None = None,
) -> LaunchPlan:
    """The launch plan for one content process.

    ``base_path`` is the public prefix with its trailing slash (``/content/<guid>/`` or
    ``/content/<guid>/_bundle<id>/``); ``runner`` is where the server wrote
    :func:`runner_source`; ``port`` is the loopback port to listen on.
    ``unix_socket``, when given, is a path where the servers that can listen on two
    sockets at once (uvicorn for ASGI, gunicorn for WSGI and Dash) also listen: the
    proxy on the same host reaches them there for fewer cycles per message than
    loopback TCP costs (``LaunchPlan.unix_socket`` says whether it applies).
    ``handoff_socket``, when given, is a path where ASGI content (the runner's uvicorn)
    takes the WebSocket connections the proxy hands over to it instead of tunnelling them
    (:mod:`podium.proxy.socket_handoff`; ``LaunchPlan.handoff_socket`` says whether it
    applies: other servers cannot take a connected socket and are tunnelled). ``host``
    is the address that servers started by their own command line (Streamlit, Panel,
    Voila) bind: loopback locally; on Kubernetes ``$(POD_IP)``, which the kubelet
    expands from the container's environment (the runner reads ``$POD_IP`` itself). Raises
    ``ValueError`` for an app mode that is not a Python or R app, an entrypoint that is
    not valid for the mode, or a malformed prefix or port. For the R modes ``shiny`` and
    ``api``, ``python`` is the R executable and ``entrypoint`` is unused (R finds
    ``app.R``, ``plumber.R`` or ``entrypoint.R`` in the bundle directory).
    """
    if app_mode not in TAGS and app_mode not in R_TAGS:
        raise ValueError(
            f"app mode {app_mode!r} cannot be run as a Python or R app process; supported: "
            + ", ".join(sorted([*TAGS, *R_TAGS]))
        )
    if not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+/", base_path) or re.search(
        r"/\.\.?/", base_path
    ):
        raise ValueError(f"base path {base_path!r} must be an absolute path ending with '/'")
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range")
    if app_mode in R_TAGS:
        return LaunchPlan(r_command(app_mode, python, host, port), {}, strip_prefix=True, tag=R_TAGS[app_mode])
    prefix = base_path.rstrip("/")
    tag = TAGS[app_mode]
    env = {"PYTHONUNBUFFERED": "1"}

    server = _RUNNER_SERVERS.get(app_mode)
    if server is not None:
        args = ["--entrypoint", module_entrypoint(entrypoint), "--port", str(port)]
        unix = unix_socket if server in _DUAL_SOCKET_SERVERS else None
        if unix is not None:
            args += ["--unix-socket", unix]
        handoff = handoff_socket if server == "asgi" else None
        if handoff is not None:
            args += ["--handoff-socket", handoff]
        if app_mode == "python-dash":
            # Dash builds asset and callback URLs from the requests prefix and routes on
            # the routes prefix: the proxy strips the public prefix, so routes are at /.
            env.update(DASH_REQUESTS_PATHNAME_PREFIX=base_path, DASH_ROUTES_PATHNAME_PREFIX="/")
        if app_mode == "python-gradio":
            env.update(GRADIO_ANALYTICS_ENABLED="False")
        argv = [python, runner, server, *args, "--prefix", prefix]
        return LaunchPlan(argv, env, strip_prefix=True, tag=tag, unix_socket=unix, handoff_socket=handoff)

    if app_mode == "python-streamlit":
        argv = [
            python, "-m", "streamlit", "run", file_entrypoint(app_mode, entrypoint),
            "--server.address", host,
            "--server.port", str(port),
            "--server.baseUrlPath", prefix.strip("/"),
            "--server.headless", "true",
            "--server.fileWatcherType", "none",
            "--server.runOnSave", "false",
            # The proxy may present another Host than the viewer's Origin; Streamlit's
            # origin check would refuse the WebSocket, and XSRF protection forces it on.
            "--server.enableCORS", "false",
            "--server.enableXsrfProtection", "false",
            "--browser.gatherUsageStats", "false",
            "--global.developmentMode", "false",
        ]
        return LaunchPlan(argv, env, strip_prefix=False, tag=tag)

    if app_mode == "python-bokeh":
        argv = [
            python, runner, "bokeh",
            "--entrypoint", file_entrypoint(app_mode, entrypoint),
            "--port", str(port),
            "--prefix", prefix,
        ]
        return LaunchPlan(argv, env, strip_prefix=False, tag=tag)

    if app_mode == "python-panel":
        path = file_entrypoint(app_mode, entrypoint)
        argv = [
            python, "-m", "panel", "serve", path,
            "--address", host,
            "--port", str(port),
            "--prefix", prefix,
            "--allow-websocket-origin", "*",
            "--use-xheaders",
            # Serve the one app at the prefix itself rather than at <prefix>/<name>.
            "--index", path.rpartition("/")[2].rpartition(".")[0],
        ]
        return LaunchPlan(argv, env, strip_prefix=False, tag=tag)

    # jupyter-voila
    notebook = [] if entrypoint is None else [file_entrypoint(app_mode, entrypoint)]
    argv = [
        python, "-m", "voila", *notebook,
        "--no-browser",
        f"--Voila.ip={host}",
        f"--port={port}",
        f"--Voila.base_url={base_path}",
        # The kernel WebSocket's Origin is the viewer's host, which the proxy's Host
        # need not match; the proxy has already authorised the viewer.
        "--Voila.tornado_settings=allow_origin=*",
    ]
    return LaunchPlan(argv, env, strip_prefix=False, tag=tag)
