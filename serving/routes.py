"""The endpoints: one small named function each, on one ``APIRouter``; the service comes from ``get_service``.

    GET /healthz, GET /v1/model, POST /v1/generate, POST /v1/perturb
"""

from __future__ import annotations

import hmac
import json
from typing import Annotated, Any, Callable

import orjson
import pyarrow as pa
from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError

from augment.rows import generate_table, perturb_table
from serving import formats
from serving.models import MAX_SEED, GenerateRequest, PerturbRequest, RequestError
from serving.service import Service, get_service, model_info, random_seed

__all__ = ["router", "require_key"]

ServiceDep = Annotated[Service, Depends(get_service)]

_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the API key, when the service has one")
_bearer = HTTPBearer(auto_error=False, description="the API key as a bearer token")


async def require_key(
    service: ServiceDep,
    api_key: Annotated[str | None, Depends(_key_header)],
    token: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """401 unless the request carries the service's API key (when it has one)."""
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


router = APIRouter()
keyed = APIRouter(dependencies=[Depends(require_key)])


@router.get("/healthz", tags=["ops"])
async def healthz(service: ServiceDep) -> JSONResponse:
    """200 once the bundle is loaded; 503 while it loads or if it failed to."""
    service.ready()
    return JSONResponse({"status": "ok", "bundle_sha256": service.sha256})


@keyed.get("/v1/model", tags=["model"])
async def get_model(service: ServiceDep) -> Response:
    """The bundle: schema, classes, sha256, training metrics, and this service's limits."""
    service.ready()
    return Response(orjson.dumps(model_info(service), default=str), media_type=formats.JSON)


_GENERATE_RESPONSES = {
    200: {
        "description": "rows as JSON (default), Parquet or an Arrow IPC stream (Accept header)",
        "content": {formats.PARQUET: {}, formats.ARROW_STREAM: {}},
    },
    406: {"description": "Accept names no type this service sends"},
    413: {"description": "more rows than the service's max_rows"},
    422: {"description": "a bad field; the message names it and the allowed values"},
}


@keyed.post("/v1/generate", tags=["generate"], responses=_GENERATE_RESPONSES)
async def generate(body: GenerateRequest, request: Request, service: ServiceDep) -> Response:
    """Sample rows per class. The same bundle, seed and counts give the rows `augment generate` writes."""
    gen = service.ready()
    media_type = negotiate(request)
    if body.counts is not None:
        counts = {service.class_index(name, ["body", "counts", name]): n for name, n in body.counts.items()}
    else:
        counts = {service.class_index(str(body.class_), ["body", "class"]): body.n}
    service.check_rows(sum(counts.values()), ["body", "counts" if body.counts is not None else "n"])
    seed = body.seed if body.seed is not None else random_seed()
    counts = {i: counts[i] for i in sorted(counts) if counts[i] > 0}
    names = {service.class_names[i]: n for i, n in counts.items()}
    meta = {"counts": names, "seed": seed, "bundle_sha256": service.sha256, "sampler": body.sampler, "temperature": body.temperature}

    def work() -> bytes:
        table = generate_table(gen, counts, seed, sampler=body.sampler, temperature=body.temperature,
                               provenance=body.provenance)
        return encode(table, media_type, meta)

    return Response(await service.run(work), media_type=media_type, headers=meta_headers(meta))


_PERTURB_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            formats.JSON: {"schema": PerturbRequest.model_json_schema()},
            formats.PARQUET: {"schema": {"type": "string", "format": "binary"}},
            formats.ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
_PERTURB_RESPONSES = {
    200: {"description": "perturbed rows with augment_source_row", "content": {formats.PARQUET: {}, formats.ARROW_STREAM: {}}},
    413: {"description": "body over max_body_bytes, or rows * per_example over max_rows"},
    415: {"description": "a body type other than JSON, Parquet or Arrow IPC stream"},
    422: {"description": "a bad field, or columns that do not match the bundle (named)"},
}


@keyed.post("/v1/perturb", tags=["generate"], openapi_extra=_PERTURB_BODY, responses=_PERTURB_RESPONSES)
async def perturb(
    request: Request,
    service: ServiceDep,
    per_example: Annotated[int | None, Query(ge=1, description="Parquet/Arrow bodies only")] = None,
    noise: Annotated[float | None, Query(ge=0, le=100, allow_inf_nan=False, description="Parquet/Arrow bodies only")] = None,
    seed: Annotated[int | None, Query(ge=0, le=MAX_SEED, description="Parquet/Arrow bodies only")] = None,
    provenance: Annotated[bool, Query(description="Parquet/Arrow bodies only: add the augment_* columns")] = False,
) -> Response:
    """Encode real rows, move each latent by noise x its posterior spread, decode with its own label."""
    gen = service.ready()
    media_type = negotiate(request)
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
        service.check_rows(len(req.rows) * req.per_example, ["body", "rows"])
        table = await service.run(lambda: columns(["body", "rows"], formats.rows_to_table, req.rows, service.input_schema))
        per_example, noise, seed, provenance = req.per_example, req.noise, req.seed, req.provenance
    elif content_type in (formats.PARQUET, formats.ARROW_STREAM):
        per_example = 1 if per_example is None else per_example
        noise = 1.0 if noise is None else noise
        table = await service.run(lambda: columns(["body"], formats.read_table_body, body, content_type, service.input_schema))
        service.check_rows(table.num_rows * per_example, ["body"])
        if table.num_rows == 0:
            raise RequestError(422, ["body"], "the body holds no rows; send at least one", "value_error")
    else:
        allowed = ", ".join(formats.MEDIA_TYPES)
        raise RequestError(415, ["header", "content-type"], f"content-type {content_type or '(none)'} is not accepted; send one of {allowed}", "unsupported_media_type")
    seed = seed if seed is not None else random_seed()
    meta = {"source_rows": table.num_rows, "per_example": per_example, "noise": noise, "seed": seed, "bundle_sha256": service.sha256}

    def work() -> bytes:
        return encode(perturb_table(gen, table, per_example, noise, seed, provenance=provenance), media_type, meta)

    return Response(await service.run(work), media_type=media_type, headers=meta_headers(meta))


router.include_router(keyed)


# --- helpers -------------------------------------------------------------------------------------------


def columns(loc: list, fn: Callable, *args: Any) -> pa.Table:
    try:
        return fn(*args)
    except formats.ColumnError as exc:
        loc = loc + [exc.column] if exc.column else loc
        raise RequestError(422, loc, str(exc), "columns") from None


def negotiate(request: Request) -> str:
    media_type = formats.choose_media_type(request.headers.get("accept"))
    if media_type is None:
        allowed = ", ".join(formats.MEDIA_TYPES)
        raise RequestError(406, ["header", "accept"], f"cannot send {request.headers.get('accept')!r}; accepted: {allowed}", "not_acceptable")
    return media_type


def encode(table: pa.Table, media_type: str, meta: dict) -> bytes:
    if media_type == formats.JSON:
        return formats.encode_json(meta, table)
    return formats.encode_table(table, media_type, {"augment": orjson.dumps(meta).decode()})


def meta_headers(meta: dict) -> dict[str, str]:
    return {"X-Augment-" + key.replace("_", "-").title(): json.dumps(value, ensure_ascii=True) if isinstance(value, dict) else str(value) for key, value in meta.items()}
