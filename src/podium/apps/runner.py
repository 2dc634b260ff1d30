"""Podium's launcher for Python content, run by the content's own interpreter.

The server copies this file into a runtime directory and runs it as
``<venv>/bin/python <runtime>/podium_runner.py <server> [options]``, with the bundle
directory as the working directory. The content's venv does not have Podium
installed, so this module imports only the standard library at its top; each server
is imported inside the function that starts it.

Servers (the first argument):

``asgi``
    uvicorn, with ``root_path`` set to the public prefix (the proxy strips it).
``wsgi``
    gunicorn, one worker with threads; ``SCRIPT_NAME`` is set to the public prefix
    (the proxy strips it), so ``url_for`` and friends build public links.
``dash``
    as ``wsgi``, serving the Dash instance's ``.server`` Flask app.
``shiny``
    ``shiny.run_app`` (uvicorn underneath) with ``root_path``; Shiny Express files work.
``gradio``
    ``Blocks.launch`` with ``root_path``; a script that calls ``launch()`` itself is
    run as ``__main__`` and finds its port and root path in ``GRADIO_*`` variables.
``bokeh``
    a Bokeh server with the one application mounted at the prefix itself (not at
    ``<prefix>/<app name>`` as ``bokeh serve`` would).

With ``--unix-socket PATH``, ``asgi``, ``wsgi`` and ``dash`` listen on that unix socket
as well as on the TCP port (the proxy on the same host prefers the socket: it costs
fewer cycles per message than loopback TCP).

Entrypoints are ``module`` or ``module:object`` (the object may be dotted:
``app:app.server``). With no object, the names ``app``, ``application``, ``create_app``
and ``make_app`` are tried in that order, as rsconnect documents for Connect
(``rsconnect.bundle.validate_entry_point``); ``create_app`` and ``make_app`` are
factories and are called with no arguments. An entrypoint that names nothing
servable ends the process with a one-line ``podium: ...`` message on stderr (status 2;
status 4 from gunicorn, which imports the app in its worker), so the job log says what
to fix; an exception raised by the bundle's own code shows its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import runpy
import socket
import sys
from typing import Any, NoReturn

DEFAULT_OBJECTS = ("app", "application", "create_app", "make_app")
FACTORIES = frozenset({"create_app", "make_app"})
# On Kubernetes a pod is reached at its own IP (the downward API's status.podIP);
# on the host, loopback only.
HOST = os.environ.get("POD_IP") or "127.0.0.1"
# Longer than any upstream pool keeps an idle connection, so the proxy never reuses one
# the app has just closed.
KEEPALIVE_SECONDS = 75
WSGI_THREADS = 8


def access_log() -> bool:
    """Whether to log each request. One line per request costs more than the request itself
    in a small app (formatting, a write to the job log's pipe, the server reading it): off
    unless ``PODIUM_ACCESS_LOG=1`` (set by Podium for the content_access_log setting, or by
    the content's own environment variables)."""
    return os.environ.get("PODIUM_ACCESS_LOG", "") == "1"
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class EntrypointError(Exception):
    """The entrypoint cannot be loaded; the message says why and what to change."""


def fail(message: str) -> NoReturn:
    print(f"podium: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def split_entrypoint(entrypoint: str) -> tuple[str, str | None]:
    module, sep, attr = entrypoint.partition(":")
    if not _DOTTED.fullmatch(module) or (sep and not _DOTTED.fullmatch(attr)):
        raise EntrypointError(f"entrypoint {entrypoint!r} is not 'module' or 'module:object'")
    return module, attr if sep else None


def import_bundle_module(module_name: str) -> Any:
    """Import ``module_name`` from the bundle directory (the working directory)."""
    bundle_dir = os.getcwd()
    if sys.path[:1] != [bundle_dir]:
        sys.path.insert(0, bundle_dir)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name.partition(".")[0]:
            raise  # a missing dependency of the bundle: the traceback says which
        raise EntrypointError(
            f"module {module_name!r} not found in the bundle directory {bundle_dir}"
        ) from None


def _attribute(module: Any, dotted: str) -> Any:
    value = module
    for part in dotted.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise EntrypointError(f"{module.__name__!r} has no object {dotted!r}") from None
    return value


def load_object(entrypoint: str, defaults: tuple[str, ...] = DEFAULT_OBJECTS) -> Any:
    """The application object an entrypoint names, calling factories."""
    module_name, attr = split_entrypoint(entrypoint)
    module = import_bundle_module(module_name)
    if attr is None:
        for name in defaults:
            if hasattr(module, name):
                attr = name
                break
        else:
            raise EntrypointError(
                f"module {module_name!r} defines none of {', '.join(defaults)}; "
                f"name the object in the entrypoint, e.g. '{module_name}:my_app'"
            )
    value = _attribute(module, attr)
    if attr.rpartition(".")[2] in FACTORIES and callable(value):
        value = value()
    return value


def script_name_middleware(app: Any, script_name: str) -> Any:
    """Tell a WSGI app the public prefix the proxy removed from the path."""

    def with_script_name(environ: dict[str, Any], start_response: Any) -> Any:
        environ["SCRIPT_NAME"] = script_name
        return app(environ, start_response)

    return with_script_name


def remove_stale_socket(path: str) -> None:
    """Remove a socket file left at ``path`` by a killed process, so it can be bound."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def bind_unix_socket(path: str) -> socket.socket:
    """A unix stream socket bound at ``path`` (a stale file there is replaced)."""
    remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    return sock


def asgi_options(port: int, root_path: str) -> dict[str, Any]:
    """uvicorn's settings for content: uvloop and httptools when the content's environment
    has them (``uvicorn[standard]`` brings both; several times the plain asyncio loop and
    h11 parser's rate), no access log unless asked (:func:`access_log`)."""
    return dict(
        host=HOST,
        port=port,
        root_path=root_path,
        proxy_headers=True,
        forwarded_allow_ips="*",
        timeout_keep_alive=KEEPALIVE_SECONDS,
        # "auto" is uvloop and httptools when importable, else asyncio and h11 (and every
        # uvicorn version knows it).
        loop="auto",
        http="auto",
        access_log=access_log(),
    )


def serve_asgi(entrypoint: str, port: int, root_path: str, unix_socket: str | None = None) -> None:
    import uvicorn

    app = load_object(entrypoint)
    options = asgi_options(port, root_path)
    if unix_socket is None:
        uvicorn.run(app, **options)
        return
    # Both sockets bound here, served by one uvicorn server.
    tcp = socket.socket(socket.AF_INET6 if ":" in HOST else socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((HOST, port))
    sockets = [tcp, bind_unix_socket(unix_socket)]
    try:
        uvicorn.Server(uvicorn.Config(app, **options)).run(sockets=sockets)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(unix_socket)


def serve_wsgi(
    entrypoint: str, port: int, script_name: str, dash: bool = False, unix_socket: str | None = None
) -> None:
    # gunicorn refuses requests outside an inherited SCRIPT_NAME; the middleware sets it.
    os.environ.pop("SCRIPT_NAME", None)
    from gunicorn.app.base import BaseApplication
    from gunicorn.errors import AppImportError

    def load() -> Any:
        app = load_object(entrypoint)
        if dash:
            if not hasattr(app, "server"):
                raise EntrypointError(
                    f"{entrypoint!r} is not a Dash app (it has no .server); "
                    "name the Dash instance in the entrypoint, e.g. 'app:app'"
                )
            app = app.server
        if not callable(app):
            raise EntrypointError(f"{entrypoint!r} is not a WSGI application")
        return script_name_middleware(app, script_name)

    if unix_socket is not None:
        remove_stale_socket(unix_socket)  # gunicorn binds it
    options = {
        "bind": [f"{HOST}:{port}"] + ([f"unix:{unix_socket}"] if unix_socket else []),
        "workers": 1,
        "worker_class": "gthread",
        "threads": WSGI_THREADS,
        "keepalive": KEEPALIVE_SECONDS,
        "forwarded_allow_ips": "*",
        "accesslog": "-" if access_log() else None,
        "errorlog": "-",
        # gunicorn >= 24 opens a control socket at one fixed path under $HOME by default,
        # which every content process would share.
        "control_socket_disable": True,
    }

    class PodiumApplication(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                if key in self.cfg.settings:  # older gunicorn lacks newer settings
                    self.cfg.set(key, value)

        def load(self) -> Any:
            try:
                return load()
            except EntrypointError as exc:
                # gunicorn stops (exit status 4) rather than respawning the worker.
                raise AppImportError(f"podium: {exc}") from None

    # The app is imported in the worker, as gunicorn does by default; an import error
    # fails its boot and gunicorn exits (status 3) with the traceback in the log.
    PodiumApplication().run()


def serve_shiny(entrypoint: str, port: int, root_path: str) -> None:
    import shiny

    module_name, attr = split_entrypoint(entrypoint)
    path = module_name.replace(".", os.sep) + ".py"
    # A file path lets shiny recognise Shiny Express apps, which have no App object.
    target = path if os.path.isfile(path) else module_name
    if attr is not None:
        target = f"{target}:{attr}"
    shiny.run_app(
        target,
        host=HOST,
        port=port,
        app_dir=os.getcwd(),
        dev_mode=False,
        root_path=root_path,
        proxy_headers=True,
        forwarded_allow_ips="*",
        timeout_keep_alive=KEEPALIVE_SECONDS,
    )


def _is_blocks(value: Any) -> bool:
    return any(cls.__name__ == "Blocks" for cls in type(value).__mro__)


def serve_gradio(entrypoint: str, port: int, root_path: str) -> None:
    # Read by Blocks.launch() when the script calls it without these arguments.
    os.environ.update(
        GRADIO_SERVER_NAME=HOST, GRADIO_SERVER_PORT=str(port), GRADIO_ROOT_PATH=root_path
    )
    module_name, attr = split_entrypoint(entrypoint)
    if attr is not None:
        blocks = load_object(entrypoint)
    else:
        path = module_name.replace(".", os.sep) + ".py"
        if not os.path.isfile(path):
            raise EntrypointError(f"{path} not found in the bundle directory {os.getcwd()}")
        sys.path.insert(0, os.getcwd())
        # Returns only when the script did not launch (and block) by itself.
        namespace = runpy.run_path(path, run_name="__main__")
        named = [namespace[n] for n in ("app", "demo", "application") if n in namespace]
        found = [v for v in named if _is_blocks(v)] or [
            v for v in namespace.values() if _is_blocks(v)
        ]
        if not found:
            raise EntrypointError(f"{path} defines no Gradio Blocks or Interface to launch")
        blocks = found[0]
    blocks.launch(server_name=HOST, server_port=port, root_path=root_path, share=False)


def serve_bokeh(entrypoint: str, port: int, prefix: str) -> None:
    from bokeh.command.util import build_single_handler_application
    from bokeh.server.server import Server

    if not os.path.exists(entrypoint):
        raise EntrypointError(f"{entrypoint} not found in the bundle directory {os.getcwd()}")
    application = build_single_handler_application(entrypoint)
    server = Server(
        {"/": application},
        address=HOST,
        port=port,
        prefix=prefix,
        allow_websocket_origin=["*"],
        use_xheaders=True,
    )
    server.run_until_shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="podium_runner", description="Start Podium content.")
    parser.add_argument("server", choices=["asgi", "wsgi", "dash", "shiny", "gradio", "bokeh"])
    parser.add_argument("--entrypoint", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--prefix", required=True, help="public prefix, no trailing slash")
    parser.add_argument("--unix-socket", help="also listen here (asgi, wsgi, dash)")
    args = parser.parse_args(argv)
    try:
        if args.server == "asgi":
            serve_asgi(args.entrypoint, args.port, args.prefix, args.unix_socket)
        elif args.server in ("wsgi", "dash"):
            serve_wsgi(
                args.entrypoint, args.port, args.prefix, dash=args.server == "dash",
                unix_socket=args.unix_socket,
            )
        elif args.server == "shiny":
            serve_shiny(args.entrypoint, args.port, args.prefix)
        elif args.server == "gradio":
            serve_gradio(args.entrypoint, args.port, args.prefix)
        else:
            serve_bokeh(args.entrypoint, args.port, args.prefix)
    except EntrypointError as exc:
        fail(str(exc))


if __name__ == "__main__":
    main()
