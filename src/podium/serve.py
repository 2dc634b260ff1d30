"""Running the server: the front on the public address, the app behind it.

The front (``podium.proxy.front``) owns the public port: it forwards content
traffic straight to content processes and everything else to the FastAPI app,
which uvicorn serves on a unix socket in the same event loop. SIGTERM or
SIGINT first marks the node not ready (``/__ready__`` answers 503) and keeps serving
for ``shutdown_delay_seconds``, then stops the front from accepting, lets open
exchanges finish, and shuts the app down (stopping content processes unless told to
keep them, or handing them to another node, see ``podium.nodes``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import resource
import signal
import socket
from collections.abc import Iterator

import uvicorn

from podium.app import Node, create_app
from podium.proxy.front import Front
from podium.proxy.keyguard import KeyGuard

log = logging.getLogger(__name__)


class StartFailed(Exception):
    """The app's start-up failed (the lifespan logged why and stopped what had started)."""


async def _app_serving(server: uvicorn.Server) -> None:
    """``server.serve()``; uvicorn's exit at a failed start-up raised as :class:`StartFailed`
    (as a task's result, not a SystemExit out of the event loop)."""
    try:
        await server.serve()
    except SystemExit as exc:
        raise StartFailed(f"the server could not start (see the log above); exit status {exc.code}") from None


# What a failed bind most likely means, by its errno (podium serve prints it).
_CANNOT_LISTEN_ADVICE = {
    errno.EADDRINUSE: "Another server may be using it",
    errno.EADDRNOTAVAIL: "This machine has no such address: give one of its own, 127.0.0.1 for this machine "
                         "only or 0.0.0.0 for all of its addresses",
    errno.EACCES: "Ports below 1024 need privileges this user lacks: choose a port from 1024 up",
}


def _cannot_listen(exc: OSError, setting: str, host: str, port: int) -> str:
    """What a user reads when the front cannot listen on ``host:port``: the reason, what
    it likely means, and the setting that chooses the address."""
    if isinstance(exc, socket.gaierror):  # its errno is getaddrinfo's, not the system's
        reason = exc.strerror or str(exc)
        advice = f"The host name {host} is not known here: give an IP address or a name this machine resolves"
    else:  # the system's own words (the event loop's strerror repeats the address)
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        advice = _CANNOT_LISTEN_ADVICE.get(exc.errno or 0, "Check the address")
    flag = " (podium serve --listen)" if setting == "listen" else ""
    return f"cannot listen on {host}:{port}: {reason}. {advice}; choose the address with the setting {setting}{flag}"


class _AppServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Signals are Podium's to handle: the front must stop before the app does.
        yield


async def serve(node: Node) -> bool:
    """Serve until SIGTERM or SIGINT; whether the stop was clean (every step of it done)."""
    settings = node.settings
    # This node's own socket, in its own runtime dir: another node's is never touched.
    socket_path = node.dirs.app_socket
    socket_path.unlink(missing_ok=True)
    app = create_app(node)
    app_server = _AppServer(
        uvicorn.Config(
            app,
            uds=str(socket_path),
            proxy_headers=True,
            forwarded_allow_ips="*",
            timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
            log_level="info",
            access_log=False,
        )
    )
    app_task = asyncio.create_task(_app_serving(app_server))
    while not app_server.started:
        if app_task.done():
            await app_task
            raise RuntimeError("the app server stopped during start-up")
        await asyncio.sleep(0.02)
    # Throttled API keys are refused before either origin's router (podium.proxy.keyguard).
    front = Front(
        KeyGuard(node.router.dashboard, node.throttle), str(socket_path),
        content_router=KeyGuard(node.router.content, node.throttle),
        content_host=node.urls.content_host() if settings.content_origin else None,
        # Vanity paths on the dashboard origin are redirected like /content/: the router sees
        # every target there but the API's and Podium's own (/__...), which no vanity can take.
        app_prefixes=(b"/__",),
    )
    where = ("listen", settings.host, settings.port)  # what is being listened on, for the error
    try:
        await front.start(settings.host, settings.port)
        log.info("Podium listening on http://%s:%d/ (dashboard and API)", settings.host, front.port)
        content_listen = settings.effective_content_listen
        if content_listen is not None:
            host, _, content_port = content_listen.rpartition(":")
            where = ("content_listen", host.strip("[]"), int(content_port))
            await front.start_content(where[1], where[2])
            log.info("Podium serving content on http://%s:%d/ (origin %s)", host, front.content_port,
                     node.urls.content_origin)
    except OSError as exc:  # the address taken (another server) or not this machine's
        # What the app's start-up did (content processes adopted, leases taken) is undone
        # by its own stop, as at any stop.
        await front.close(0)
        app_server.should_exit = True
        await app_task
        raise StartFailed(_cannot_listen(exc, *where)) from None

    # What start-up made lives as long as the server: frozen out of the collector's sight,
    # it is no longer walked by every full collection, which requests that make many
    # objects (a list of 1,000 content items) set off (bench/README.md, "scale.py").
    gc.collect()
    gc.freeze()

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    waiter = asyncio.create_task(stopping.wait())
    await asyncio.wait({app_task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    log.info("Podium stopping")
    if stopping.is_set() and settings.shutdown_delay_seconds > 0:
        # Not ready any more, still serving: a load balancer (a Kubernetes Service) stops
        # sending requests here before the front stops taking them.
        app.state.stopping = True
        log.info("serving %g s more while load balancers take this node out", settings.shutdown_delay_seconds)
        await asyncio.wait({app_task}, timeout=settings.shutdown_delay_seconds)
    await front.close(settings.shutdown_grace_seconds)
    app_server.should_exit = True
    await app_task
    waiter.cancel()
    socket_path.unlink(missing_ok=True)
    for folder in (node.dirs.sockets, node.dirs.root):  # gone when empty (no kept processes)
        with contextlib.suppress(OSError):
            folder.rmdir()
    return not getattr(app.state, "stop_failed", None)


def raise_open_files_limit() -> int:
    """Raises this process's soft limit of open files to its hard limit, and returns it.

    Every proxied connection holds two descriptors (the viewer's and the content
    process's), so 2,000 websocket sessions need more than the 1,024 many systems give a
    process by default; the hard limit is the administrator's to set."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as error:
            log.warning("cannot raise the open files limit from %d to %d: %s", soft, target, error)
    return soft


def run(node: Node) -> bool:
    """Serve ``node`` until it is stopped; whether the stop was clean."""
    log.info("open files limit: %d", raise_open_files_limit())
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        runner = asyncio.Runner()
    with runner:
        return runner.run(serve(node))
