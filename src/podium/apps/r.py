"""How R app modes are started: Shiny apps (``shiny``) and Plumber APIs (``api``).

Both are run by the execution environment's R in the bundle directory, with the
bundle's R package library first on ``R_LIBS`` (the caller's environment), and
see paths with the public prefix stripped by the proxy (``strip_prefix``):

- ``shiny``: ``shiny::runApp(".")``, which serves ``app.R`` or ``ui.R``/``server.R``.
  Shiny's page refers to its assets and its WebSocket (``websocket/``) relatively,
  so it works under ``/content/<guid>/`` as it is.
- ``api``: ``plumber::plumb(dir = ".")``, which sources ``entrypoint.R`` (it returns
  the router) when the bundle has one, else ``plumber.R``, as Connect does; then
  ``plumber::pr_run``.

The address and port are passed as arguments after ``--args``, so nothing from the
bundle is ever pasted into R code.
"""

from __future__ import annotations

__all__ = ["R_TAGS", "r_command"]

# Connect's job tags.
R_TAGS: dict[str, str] = {"shiny": "run_app", "api": "run_api"}

_ARGS = "args <- commandArgs(trailingOnly = TRUE); host <- args[[1]]; port <- as.integer(args[[2]]); "
_EXPRESSIONS: dict[str, str] = {
    "shiny": _ARGS + "options(shiny.autoreload = FALSE); "
    "shiny::runApp('.', host = host, port = port, launch.browser = FALSE)",
    "api": _ARGS + "plumber::pr_run(plumber::plumb(dir = '.'), host = host, port = port)",
}


def r_command(app_mode: str, r: str, host: str, port: int) -> list[str]:
    """The command that starts an R content process of ``app_mode`` with the R executable ``r``."""
    return [r, "--no-echo", "--no-restore", "--no-save", "-e", _EXPRESSIONS[app_mode],
            "--args", host, str(port)]
