"""``create_app(settings)``: assembles the server from its parts."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import update
from starlette.exceptions import HTTPException as StarletteHTTPException

from podium import __version__, errors, web
from podium.api import (
    bundles,
    content,
    deploy,
    env_vars,
    environments,
    jobs,
    keys,
    permissions,
    renderings,
    schedules,
    server,
    users,
)
from podium.context import Podium, open_podium
from podium.proxy import routes as content_routes
from podium.render import fail_interrupted_renderings
from podium.render.schedules import ScheduleRunner
from podium.settings import Settings
from podium.store.models import Task, utcnow

log = logging.getLogger(__name__)
API = "/__api__"


def _error_response(exc: errors.ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.ApiError)
    async def api_error(_request: Request, exc: errors.ApiError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}"
            for e in exc.errors()
        )
        return _error_response(errors.bad_request(f"Invalid request: {problems}"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code in (404, 405):
            return _error_response(errors.unsupported_endpoint(request.url.path))
        return _error_response(errors.ApiError(exc.status_code, 1, str(exc.detail)))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error_response(errors.internal())


def _fail_interrupted_tasks(ctx: Podium) -> None:
    """Tasks left running by a stopped server can never finish: say so."""
    with ctx.store.session() as session:
        session.execute(
            update(Task)
            .where(Task.finished.is_(False))
            .values(
                finished=True,
                code=1,
                error="The server stopped while this task ran; deploy again.",
                finished_time=utcnow(),
            )
        )


def create_app(settings: Settings, ctx: Podium | None = None) -> FastAPI:
    ctx = ctx or open_podium(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        _fail_interrupted_tasks(ctx)
        fail_interrupted_renderings(ctx.store)
        await ctx.scheduler.adopt(ctx.wanted_target)
        ctx.scheduler.start()
        render_schedules = ScheduleRunner(
            ctx.store, settings.schedule_poll_seconds, lambda cid: renderings.run_scheduled(ctx, cid)
        )
        render_schedules.start()
        log.info("Podium %s serving on %s", __version__, settings.listen)
        yield
        await render_schedules.close()
        await ctx.tasks.shutdown()
        await ctx.scheduler.close(stop_processes=not settings.keep_processes_on_shutdown)
        await ctx.backend.close()
        ctx.store.dispose()

    app = FastAPI(
        title="Podium",
        version=__version__,
        description="Posit Connect-compatible server API of Podium.",
        docs_url="/__docs__",
        redoc_url=None,
        openapi_url=f"{API}/openapi.json",
        lifespan=lifespan,
    )
    app.state.podium = ctx
    _install_error_handlers(app)
    for module in (
        server, users, keys, content, bundles, deploy, env_vars, permissions, jobs, environments,
        renderings, schedules,
    ):
        app.include_router(module.router, prefix=API)
    app.include_router(content_routes.router)
    web.install(app)
    return app
