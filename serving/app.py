"""The FastAPI app over the torch-free generator: one factory, run by uvicorn or by Ray Serve unchanged.

    app = create_app(ServeSettings(model="models/bank"))             # loads the bundle in the background
    app = create_app(settings, generator=Generator.from_path(...))   # already loaded (CLI, Ray replica)

Endpoints (``serving/routes.py``): GET /healthz, GET /v1/model, POST /v1/generate, POST /v1/perturb, and the
OpenAPI docs at /docs. Inference and response encoding run in worker threads (at most
``settings.max_concurrent`` at once), never on the event loop. Every error is a JSON body
``{"detail": [{"loc", "msg", "type"}]}`` (FastAPI's shape); no traceback ever reaches a client.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from contextlib import asynccontextmanager
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from augment.errors import AugmentError
from serving.limits import BodyLimitMiddleware
from serving.models import RequestError, error_body
from serving.routes import router
from serving.service import Service
from serving.settings import ServeSettings

__all__ = ["create_app"]

log = logging.getLogger("augment.serving")


def create_app(
    settings: ServeSettings, *, generator: Any = None, loader: Callable[[], Any] | None = None
) -> FastAPI:
    """The service for one bundle. Give a loaded ``generator``, or let the app load ``settings.model`` (or call
    ``loader``) in a worker thread at start-up; /healthz answers 503 until it is loaded."""
    if generator is None and loader is None:
        loader = _bundle_loader(settings)
    app = FastAPI(
        title="augment",
        summary="Labeled synthetic rows from a conditional VAE bundle",
        version=_version(),
        lifespan=_lifespan,
    )
    app.state.service = Service(settings, generator, loader)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    for exc_type, handler in _ERROR_HANDLERS.items():
        app.add_exception_handler(exc_type, handler)
    app.include_router(router)
    return app


def _bundle_loader(settings: ServeSettings) -> Callable[[], Any]:
    def load() -> Any:
        from augment.generator import Generator

        return Generator.from_path(settings.model, threads=settings.session_threads())

    return load


@asynccontextmanager
async def _lifespan(app: FastAPI):
    service: Service = app.state.service
    task = asyncio.create_task(service.load()) if service.generator is None else None
    try:
        yield
    finally:
        if task is not None and not task.done():
            task.cancel()
        log.info("service stopped")


# --- errors: every one a JSON body in FastAPI's shape, never a traceback -------------------------------


async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
    return JSONResponse(error_body(exc.loc, exc.msg, exc.type), status_code=exc.status, headers=exc.headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI's shape, minus the echoed input (it can be a whole upload) and with ctx made printable.
    detail = []
    for err in exc.errors():
        item = {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "value_error")}
        if err.get("ctx"):
            item["ctx"] = {k: v if isinstance(v, (str, int, float, bool)) else str(v) for k, v in err["ctx"].items()}
        detail.append(item)
    return JSONResponse({"detail": detail}, status_code=422)


async def _augment_error(request: Request, exc: AugmentError) -> JSONResponse:
    return JSONResponse(error_body(["body"], str(exc), type(exc).__name__), status_code=422)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    ref = secrets.token_hex(4)
    log.error("unhandled error [%s] on %s %s", ref, request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body([], f"internal error [{ref}]; the server log has the details", "internal"), status_code=500)


_ERROR_HANDLERS: dict[type, Callable] = {
    RequestError: _request_error,
    RequestValidationError: _validation_error,
    AugmentError: _augment_error,
    Exception: _unexpected,
}


def _version() -> str:
    from augment import __version__

    return __version__
