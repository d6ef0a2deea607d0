"""The FastAPI app over the torch-free generator: one factory, run by uvicorn or by Ray Serve unchanged.

    app = create_app(ServeSettings(model="models/bank"))             # loads the bundle in the background
    app = create_app(settings, generator=Generator.from_path(...))   # already loaded (CLI, Ray replica)

Endpoints: GET /healthz, GET /v1/model, POST /v1/generate, POST /v1/perturb, and the OpenAPI docs at /docs.
Inference and response encoding run in worker threads (at most ``settings.max_concurrent`` at once), never on
the event loop. Every error is a JSON body ``{"detail": [{"loc", "msg", "type"}]}`` (FastAPI's shape); no
traceback ever reaches a client.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from contextlib import asynccontextmanager
from typing import Annotated, Any, Callable

import anyio
import orjson
import pyarrow as pa
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError

from augment.conditions import ConditionError
from augment.errors import AugmentError
from augment.rows import generate_table, perturb_table
from serving import formats
from serving.limits import BodyLimitMiddleware
from serving.models import MAX_SEED, SAMPLERS, GenerateRequest, PerturbRequest, RequestError, error_body
from serving.settings import ServeSettings, read_api_key

__all__ = ["create_app"]

log = logging.getLogger("augment.serving")


# --- the service state (one per process) --------------------------------------------------------------------


class _Service:
    def __init__(self, settings: ServeSettings, generator: Any, loader: Callable[[], Any] | None) -> None:
        self.settings = settings
        self.generator = None
        self.load_error: str | None = None
        self.loader = loader
        self.api_key = read_api_key(settings)
        self.limiter = anyio.CapacityLimiter(settings.max_concurrent)
        if generator is not None:
            self._attach(generator)

    def _attach(self, gen: Any) -> None:
        self.class_names = [str(c) for c in gen.classes]
        self.class_by_name = {name: i for i, name in enumerate(self.class_names)}
        self.input_schema = gen.schema  # the real data's columns, label included
        self.sha256 = str(gen.bundle.sha256)
        self.generator = gen

    async def load(self) -> None:
        try:
            gen = await anyio.to_thread.run_sync(self.loader)
        except AugmentError as exc:
            self.load_error = str(exc)
            log.error("bundle failed to load: %s", exc)
            return
        except Exception:  # a bug: keep the traceback in the log, a short reason in /healthz
            self.load_error = "unexpected error; see the server log"
            log.exception("bundle failed to load")
            return
        self._attach(gen)
        log.info("bundle %s loaded: %d classes", self.sha256[:12], len(self.class_names))

    def ready(self) -> Any:
        if self.generator is None:
            msg = f"bundle failed to load: {self.load_error}" if self.load_error else "the bundle is still loading"
            raise RequestError(503, [], msg, "not_ready", headers={"Retry-After": "1"})
        return self.generator

    async def run(self, fn: Callable[[], Any]) -> Any:
        return await anyio.to_thread.run_sync(fn, limiter=self.limiter)


def _model_info(service: _Service) -> dict:
    gen = service.generator
    meta = getattr(gen.bundle, "json", None) or {}
    label = meta.get("label") or {}

    def fields(schema: pa.Schema) -> list[dict]:
        return [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema]

    return {
        "bundle_sha256": service.sha256,
        "modality": meta.get("modality"),
        "label": label.get("column"),
        "classes": list(gen.classes),
        "class_names": service.class_names,
        "class_counts": label.get("counts"),
        "schema": fields(service.input_schema),
        "output_schema": fields(gen.output_schema),
        "latent_dim": meta.get("latent_dim"),
        "training": meta.get("training"),
        "samplers": list(SAMPLERS),
        "media_types": list(formats.MEDIA_TYPES),
        "limits": {"max_rows": service.settings.max_rows, "max_body_bytes": service.settings.max_body_bytes},
    }


# --- the app -----------------------------------------------------------------------------------------------


def create_app(
    settings: ServeSettings, *, generator: Any = None, loader: Callable[[], Any] | None = None
) -> FastAPI:
    """The service for one bundle. Give a loaded ``generator``, or let the app load ``settings.model`` (or call
    ``loader``) in a worker thread at start-up; /healthz answers 503 until it is loaded."""
    if generator is None and loader is None:

        def loader() -> Any:
            from augment.generator import Generator

            return Generator.from_path(settings.model, threads=settings.session_threads())

    service = _Service(settings, generator, loader)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.create_task(service.load()) if service.generator is None else None
        try:
            yield
        finally:
            if task is not None and not task.done():
                task.cancel()
            log.info("service stopped")

    app = FastAPI(
        title="augment",
        summary="Labeled synthetic rows from a conditional VAE bundle",
        version=_version(),
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    _add_error_handlers(app)
    auth = _auth_dependency(service)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> JSONResponse:
        """200 once the bundle is loaded; 503 while it loads or if it failed to."""
        service.ready()
        return JSONResponse({"status": "ok", "bundle_sha256": service.sha256})

    @app.get("/v1/model", tags=["model"], dependencies=[Depends(auth)])
    async def model_info() -> Response:
        """The bundle: schema, classes, sha256, training metrics, and this service's limits."""
        service.ready()
        return Response(orjson.dumps(_model_info(service), default=str), media_type=formats.JSON)

    @app.post(
        "/v1/generate",
        tags=["generate"],
        dependencies=[Depends(auth)],
        responses={
            200: {
                "description": "rows as JSON (default), Parquet or an Arrow IPC stream (Accept header)",
                "content": {formats.PARQUET: {}, formats.ARROW_STREAM: {}},
            },
            406: {"description": "Accept names no type this service sends"},
            413: {"description": "more rows than the service's max_rows"},
            422: {"description": "a bad field; the message names it and the allowed values"},
        },
    )
    async def generate(body: GenerateRequest, request: Request) -> Response:
        """Sample rows per class. The same bundle, seed and counts give the rows `augment generate` writes."""
        gen = service.ready()
        media_type = _negotiate(request)
        if body.counts is not None:
            requested = body.counts
            counts = {service_index(service, name, ["body", "counts", name]): n for name, n in requested.items()}
        else:
            name = str(body.class_)
            counts = {service_index(service, name, ["body", "class"]): body.n}
        total = sum(counts.values())
        _check_rows(service, total, ["body", "counts" if body.counts is not None else "n"])
        seed = body.seed if body.seed is not None else _random_seed()
        counts = {i: counts[i] for i in sorted(counts) if counts[i] > 0}
        names = {service.class_names[i]: n for i, n in counts.items()}
        meta = {"counts": names, "seed": seed, "bundle_sha256": service.sha256, "sampler": body.sampler, "temperature": body.temperature}
        if body.where:
            meta["where"] = body.where

        def work() -> bytes:
            try:
                table = generate_table(gen, counts, seed, sampler=body.sampler, temperature=body.temperature,
                                       provenance=body.provenance, where=body.where)
            except ConditionError as exc:  # a bad clause, or one no training row of a class meets
                raise RequestError(422, ["body", "where"], str(exc), "where") from None
            return _encode(table, media_type, meta)

        return Response(await service.run(work), media_type=media_type, headers=_meta_headers(meta))

    @app.post(
        "/v1/perturb",
        tags=["generate"],
        dependencies=[Depends(auth)],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    formats.JSON: {"schema": PerturbRequest.model_json_schema()},
                    formats.PARQUET: {"schema": {"type": "string", "format": "binary"}},
                    formats.ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}},
                },
            }
        },
        responses={
            200: {"description": "perturbed rows with augment_source_row", "content": {formats.PARQUET: {}, formats.ARROW_STREAM: {}}},
            413: {"description": "body over max_body_bytes, or rows * per_example over max_rows"},
            415: {"description": "a body type other than JSON, Parquet or Arrow IPC stream"},
            422: {"description": "a bad field, or columns that do not match the bundle (named)"},
        },
    )
    async def perturb(
        request: Request,
        per_example: Annotated[int | None, Query(ge=1, description="Parquet/Arrow bodies only")] = None,
        noise: Annotated[float | None, Query(ge=0, le=100, allow_inf_nan=False, description="Parquet/Arrow bodies only")] = None,
        seed: Annotated[int | None, Query(ge=0, le=MAX_SEED, description="Parquet/Arrow bodies only")] = None,
        provenance: Annotated[bool, Query(description="Parquet/Arrow bodies only: add the augment_* columns")] = False,
    ) -> Response:
        """Encode real rows, move each latent by noise x its posterior spread, decode with its own label."""
        gen = service.ready()
        media_type = _negotiate(request)
        content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        body = await request.body()
        if content_type == formats.JSON:
            if per_example is not None or noise is not None or seed is not None or provenance:
                raise RequestError(422, ["query"], "with a JSON body, send per_example, noise and seed in the body", "value_error")
            try:
                req = PerturbRequest.model_validate(orjson.loads(body))
            except orjson.JSONDecodeError as exc:
                raise RequestError(422, ["body"], f"the body is not valid JSON: {exc}", "json_invalid") from None
            except ValidationError as exc:
                raise RequestValidationError(exc.errors(include_url=False, include_input=False)) from None
            _check_rows(service, len(req.rows) * req.per_example, ["body", "rows"])
            table = await service.run(lambda: _columns(["body", "rows"], formats.rows_to_table, req.rows, service.input_schema))
            per_example, noise, seed, provenance = req.per_example, req.noise, req.seed, req.provenance
        elif content_type in (formats.PARQUET, formats.ARROW_STREAM):
            per_example = 1 if per_example is None else per_example
            noise = 1.0 if noise is None else noise
            table = await service.run(lambda: _columns(["body"], formats.read_table_body, body, content_type, service.input_schema))
            _check_rows(service, table.num_rows * per_example, ["body"])
            if table.num_rows == 0:
                raise RequestError(422, ["body"], "the body holds no rows; send at least one", "value_error")
        else:
            allowed = ", ".join(formats.MEDIA_TYPES)
            raise RequestError(415, ["header", "content-type"], f"content-type {content_type or '(none)'} is not accepted; send one of {allowed}", "unsupported_media_type")
        seed = seed if seed is not None else _random_seed()
        meta = {"source_rows": table.num_rows, "per_example": per_example, "noise": noise, "seed": seed, "bundle_sha256": service.sha256}

        def work() -> bytes:
            return _encode(perturb_table(gen, table, per_example, noise, seed, provenance=provenance), media_type, meta)

        return Response(await service.run(work), media_type=media_type, headers=_meta_headers(meta))

    return app


def service_index(service: _Service, name: str, loc: list) -> int:
    try:
        return service.class_by_name[name]
    except KeyError:
        known = ", ".join(repr(n) for n in service.class_names)
        raise RequestError(422, loc, f"unknown class {name!r}; known classes: {known}", "class_name") from None


def _check_rows(service: _Service, rows: int, loc: list) -> None:
    if rows > service.settings.max_rows:
        raise RequestError(
            413, loc, f"{rows} rows asked for; this service sends at most {service.settings.max_rows} per request", "too_many_rows"
        )


def _random_seed() -> int:
    # 53 bits: the seed a response reports survives a round trip through a JavaScript number.
    return secrets.randbits(53)


def _columns(loc: list, fn: Callable, *args: Any) -> pa.Table:
    try:
        return fn(*args)
    except formats.ColumnError as exc:
        loc = loc + [exc.column] if exc.column else loc
        raise RequestError(422, loc, str(exc), "columns") from None


def _negotiate(request: Request) -> str:
    media_type = formats.choose_media_type(request.headers.get("accept"))
    if media_type is None:
        allowed = ", ".join(formats.MEDIA_TYPES)
        raise RequestError(406, ["header", "accept"], f"cannot send {request.headers.get('accept')!r}; accepted: {allowed}", "not_acceptable")
    return media_type


def _encode(table: pa.Table, media_type: str, meta: dict) -> bytes:
    if media_type == formats.JSON:
        return formats.encode_json(meta, table)
    return formats.encode_table(table, media_type, {"augment": orjson.dumps(meta).decode()})


def _meta_headers(meta: dict) -> dict[str, str]:
    import json

    return {"X-Augment-" + key.replace("_", "-").title(): json.dumps(value, ensure_ascii=True) if isinstance(value, dict) else str(value) for key, value in meta.items()}


def _auth_dependency(service: _Service) -> Callable:
    key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the API key, when the service has one")
    bearer = HTTPBearer(auto_error=False, description="the API key as a bearer token")

    # Defaults, not Annotated[...]: with postponed annotations FastAPI cannot see these closure variables.
    async def require_key(
        api_key: str | None = Depends(key_header),
        token: HTTPAuthorizationCredentials | None = Depends(bearer),
    ) -> None:
        if service.api_key is None:
            return
        given = api_key if api_key is not None else (token.credentials if token is not None else None)
        # Starlette decodes header bytes as latin-1, so encoding back gives the bytes the client sent, compared
        # to the key's UTF-8 bytes in time independent of where they differ.
        if given is None or not hmac.compare_digest(given.encode("latin-1"), service.api_key):
            raise RequestError(
                401, ["header", "x-api-key"], "missing or wrong API key: send X-API-Key: <key> or Authorization: Bearer <key>",
                "unauthorized", headers={"WWW-Authenticate": "Bearer"},
            )

    return require_key


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse(error_body(exc.loc, exc.msg, exc.type), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's shape, minus the echoed input (it can be a whole upload) and with ctx made printable.
        detail = []
        for err in exc.errors():
            item = {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "value_error")}
            if err.get("ctx"):
                item["ctx"] = {k: v if isinstance(v, (str, int, float, bool)) else str(v) for k, v in err["ctx"].items()}
            detail.append(item)
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(AugmentError)
    async def augment_error(request: Request, exc: AugmentError) -> JSONResponse:
        return JSONResponse(error_body(["body"], str(exc), type(exc).__name__), status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        ref = secrets.token_hex(4)
        log.error("unhandled error [%s] on %s %s", ref, request.method, request.url.path, exc_info=exc)
        return JSONResponse(error_body([], f"internal error [{ref}]; the server log has the details", "internal"), status_code=500)


def _version() -> str:
    from augment import __version__

    return __version__
