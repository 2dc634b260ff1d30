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

With ``--handoff-socket PATH``, ``asgi`` also takes WebSocket connections the proxy hands
over (:class:`Handoff`): once the proxy has decided a viewer may open a WebSocket to this
content, it passes the viewer's TCP socket itself over that unix socket (``SCM_RIGHTS``),
with the upgrade request as it would have forwarded it, and leaves the session's bytes to
this process: no tunnel, no copy through the proxy. The proxy keeps the unix connection of
each hand-off open; this process closes it when the session ends, which is how the proxy
learns of the end (usage, the scheduler's connection count).

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
import struct
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


# -- WebSocket connections handed over by the proxy --

# What precedes the request head on a hand-off connection: the head's length, then the
# read and connection timeouts in milliseconds (0: none). The viewer's socket travels as
# SCM_RIGHTS ancillary data with these bytes. podium.proxy.socket_handoff writes it.
HANDOFF_HEADER = struct.Struct("!III")
# struct tcp_info (linux/tcp.h): u32 tcpi_last_data_sent at byte 44, tcpi_last_data_recv
# at byte 52, in milliseconds ago.
_TCP_INFO = getattr(socket, "TCP_INFO", 11)
_TCP_INFO_SIZE = 56


def _idle_ms(sock: Any) -> tuple[int, int] | None:
    """Milliseconds since the socket last received and last sent data (kernel counters,
    so the session's own path pays nothing for its timeouts), or None where unknown."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_SIZE)
    except (OSError, TypeError):
        return None
    if len(info) < _TCP_INFO_SIZE:
        return None
    sent, recv = struct.unpack_from("=I4xI", info, 44)
    return recv, sent


class HandedConnection:
    """asyncio protocol of one handed-over connection while it is still HTTP.

    It feeds the upgrade request to the server's own HTTP protocol (``inner``); uvicorn
    then switches the transport to its WebSocket protocol, and this object leaves the
    data path. The connection was handed over for that one request: any further byte
    while it is still HTTP (an upgrade that did not happen) closes it, so a viewer can
    never send a request of its own to the content without the proxy in between.
    ``ended`` is called once when the connection closes.
    """

    def __init__(self, inner: Any, head: bytes, timeouts: tuple[float, float], ended: Any) -> None:
        self.inner = inner
        self.head = head
        self.read_timeout, self.connection_timeout = timeouts
        self.ended = ended
        self.transport: Any = None
        self.timer: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.inner.connection_made(transport)
        self.inner.data_received(self.head)
        upgraded = transport.get_protocol()
        if upgraded is not self and upgraded is not None:
            lost = upgraded.connection_lost

            def connection_lost(exc: Exception | None) -> None:
                try:
                    lost(exc)
                finally:
                    self._end()

            try:
                upgraded.connection_lost = connection_lost
            except AttributeError:  # a protocol with __slots__: watch the transport instead
                self._poll_closed()
        if self.read_timeout or self.connection_timeout:
            self._check_timeouts()

    def data_received(self, data: bytes) -> None:
        self.transport.close()  # still HTTP after the upgrade request: see the class docs

    def eof_received(self) -> bool | None:
        return bool(self.inner.eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self.inner.connection_lost(exc)
        finally:
            self._end()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def _end(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        ended, self.ended = self.ended, None
        if ended is not None:
            ended()

    def _poll_closed(self) -> None:
        if self.transport.is_closing():
            self._end()
        elif self.ended is not None:
            self.timer = _loop().call_later(5, self._poll_closed)

    def _check_timeouts(self) -> None:
        """Close the session past the read timeout (nothing from the viewer) or the
        connection timeout (nothing either way), as the proxy does for a tunnel."""
        self.timer = None
        if self.ended is None:
            return
        idle = _idle_ms(self.transport.get_extra_info("socket"))
        if idle is None:
            return
        recv, sent = idle[0] / 1000, idle[1] / 1000
        left = []
        if self.read_timeout:
            left.append(self.read_timeout - recv)
        if self.connection_timeout:
            left.append(self.connection_timeout - min(recv, sent))
        wait = min(left)
        if wait <= 0:
            self.transport.abort()
            return
        self.timer = _loop().call_later(wait + 0.01, self._check_timeouts)


def raise_file_limit() -> None:
    """Raise this process's open-file limit to its hard limit: a handed-over session holds
    two descriptors here (the viewer's socket and the proxy's connection), and the usual
    soft limit of 1024 would cap a process at about 500 sessions."""
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _loop() -> Any:
    import asyncio

    return asyncio.get_running_loop()


class Handoff:
    """Listens on ``path`` for connections the proxy hands over (see the module docs) and
    serves each with a protocol from ``make_protocol`` (the server's HTTP protocol)."""

    def __init__(self, path: str, make_protocol: Any) -> None:
        self.path = path
        self.make_protocol = make_protocol
        self.loop: Any = None
        self.listener: socket.socket | None = None

    def start(self) -> None:
        self.loop = _loop()
        raise_file_limit()
        listener = bind_unix_socket(self.path)
        listener.listen(256)
        listener.setblocking(False)
        self.listener = listener
        self.loop.add_reader(listener.fileno(), self._accept)

    def close(self) -> None:
        if self.listener is not None:
            self.loop.remove_reader(self.listener.fileno())
            self.listener.close()
            self.listener = None
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def _accept(self) -> None:
        listener = self.listener
        assert listener is not None
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # out of file descriptors: try again shortly, do not spin
            print(f"podium: cannot take a handed-over connection: {exc}", file=sys.stderr, flush=True)
            self.loop.remove_reader(listener.fileno())
            self.loop.call_later(0.5, self._listen_again, listener)
            return
        conn.setblocking(False)
        state: dict[str, Any] = {"data": b"", "fds": []}
        self.loop.add_reader(conn.fileno(), self._read, conn, state)

    def _listen_again(self, listener: socket.socket) -> None:
        if listener is self.listener:
            self.loop.add_reader(listener.fileno(), self._accept)

    def _read(self, conn: socket.socket, state: dict[str, Any]) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(conn, 65536 + HANDOFF_HEADER.size, 1)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, fds = b"", []
        state["fds"].extend(fds)
        state["data"] += data
        buffered = state["data"]
        size = HANDOFF_HEADER.size
        complete = len(buffered) >= size and len(buffered) >= size + HANDOFF_HEADER.unpack_from(buffered)[0]
        if data and not complete:
            return
        self.loop.remove_reader(conn.fileno())
        if not complete or len(state["fds"]) != 1:
            for fd in state["fds"]:
                os.close(fd)
            conn.close()
            return
        length, read_ms, conn_ms = HANDOFF_HEADER.unpack_from(buffered)
        head = buffered[size : size + length]
        client = socket.socket(fileno=state["fds"][0])
        client.setblocking(False)
        # The proxy learns of the session's end when this connection closes.
        self.loop.add_reader(conn.fileno(), self._front_gone, conn)
        task = self.loop.create_task(self._serve(client, head, (read_ms / 1000, conn_ms / 1000), conn))
        task.add_done_callback(_log_failure)

    def _front_gone(self, conn: socket.socket) -> None:
        """The proxy closed its end (it stopped): the session goes on without it."""
        with contextlib.suppress(OSError):
            if conn.recv(1):
                return
        self.loop.remove_reader(conn.fileno())

    async def _serve(self, client: socket.socket, head: bytes, timeouts: tuple[float, float],
                     conn: socket.socket) -> None:
        def ended() -> None:
            with contextlib.suppress(ValueError, OSError):
                self.loop.remove_reader(conn.fileno())
            conn.close()

        try:
            await self.loop.connect_accepted_socket(
                lambda: HandedConnection(self.make_protocol(), head, timeouts, ended), sock=client
            )
        except BaseException:
            client.close()
            ended()
            raise


def _log_failure(task: Any) -> None:
    if not task.cancelled() and task.exception() is not None:
        import traceback

        exc = task.exception()
        traceback.print_exception(type(exc), exc, exc.__traceback__)


def uvicorn_protocol_factory(server: Any) -> Any:
    """A function making the HTTP protocol a started uvicorn ``server`` serves each
    connection with, as ``Server.startup`` makes it (older uvicorn has no ``app_state``)."""
    import inspect

    config = server.config
    cls = config.http_protocol_class
    kwargs: dict[str, Any] = {"config": config, "server_state": server.server_state}
    if "app_state" in inspect.signature(cls.__init__).parameters:
        kwargs["app_state"] = server.lifespan.state
    return lambda: cls(**kwargs)


def serve_asgi(
    entrypoint: str, port: int, root_path: str, unix_socket: str | None = None,
    handoff_socket: str | None = None,
) -> None:
    import uvicorn

    app = load_object(entrypoint)
    options = asgi_options(port, root_path)
    if unix_socket is None and handoff_socket is None:
        uvicorn.run(app, **options)
        return

    class Server(uvicorn.Server):
        handoff: Handoff | None = None

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if handoff_socket is not None and self.started:
                try:
                    handoff = Handoff(handoff_socket, uvicorn_protocol_factory(self))
                    handoff.start()
                    self.handoff = handoff
                except Exception as exc:  # the proxy tunnels instead: say why, serve on
                    print(f"podium: WebSocket hand-off unavailable: {exc!r}", file=sys.stderr, flush=True)

        async def shutdown(self, sockets: Any = None) -> None:
            if self.handoff is not None:
                self.handoff.close()
            await super().shutdown(sockets)

    # Both sockets bound here, served by one uvicorn server.
    tcp = socket.socket(socket.AF_INET6 if ":" in HOST else socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((HOST, port))
    sockets = [tcp] + ([bind_unix_socket(unix_socket)] if unix_socket is not None else [])
    try:
        Server(uvicorn.Config(app, **options)).run(sockets=sockets)
    finally:
        for path in (unix_socket, handoff_socket):
            if path is not None:
                with contextlib.suppress(OSError):
                    os.unlink(path)


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
    parser.add_argument("--handoff-socket", help="take WebSocket connections handed over here (asgi)")
    args = parser.parse_args(argv)
    try:
        if args.server == "asgi":
            serve_asgi(args.entrypoint, args.port, args.prefix, args.unix_socket, args.handoff_socket)
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
