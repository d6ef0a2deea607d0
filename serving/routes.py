"""The endpoints: one small named function each, on one ``APIRouter``; the service comes from ``get_service``.

    GET /healthz, GET /v1/model, POST /v1/generate, POST /v1/perturb
"""

from __future__ import annotations

import hmac
import json
from typing import Annotated, Any

import orjson
import pyarrow as pa
from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError

from augment.conditions import ConditionError
from augment.rows import generate_table, perturb_table
from serving import bodies, formats
from serving.limits import estimate_response_bytes
from serving.models import MAX_SEED, GenerateRequest, PerturbRequest, RequestError
from serving.service import Service, admitted, get_service, model_info, random_seed

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
# POSTs are admitted (or refused with 503) before their body is read: the queue is bounded, not each body.
work = APIRouter(dependencies=[Depends(require_key), Depends(admitted)])


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


_GENERATE_BODY = {"requestBody": {"required": True, "content": {formats.JSON: {"schema": GenerateRequest.model_json_schema()}}}}


@work.post("/v1/generate", tags=["generate"], openapi_extra=_GENERATE_BODY, responses=_GENERATE_RESPONSES)
async def generate(request: Request, service: ServiceDep) -> Response:
    """Sample rows per class. The same bundle, seed and counts give the rows `augment generate` writes."""
    gen = service.ready()
    media_type = negotiate(request)
    require_content_type(request, (formats.JSON,))
    raw = await service.read_body(request)
    body = await service.run(request, lambda: parse_json(GenerateRequest, raw))
    if body.counts is not None:
        counts = {service.class_index(name, ["body", "counts", name]): n for name, n in body.counts.items()}
    else:
        counts = {service.class_index(str(body.class_), ["body", "class"]): body.n}
    loc = ["body", "counts" if body.counts is not None else "n"]
    service.check_rows(sum(counts.values()), loc)
    check_response_size(service, sum(counts.values()), media_type, body.provenance, loc)
    seed = body.seed if body.seed is not None else random_seed()
    counts = {i: counts[i] for i in sorted(counts) if counts[i] > 0}
    names = {service.class_names[i]: n for i, n in counts.items()}
    meta = {"counts": names, "seed": seed, "bundle_sha256": service.sha256, "sampler": body.sampler, "temperature": body.temperature}
    if body.where:
        meta["where"] = body.where

    def run() -> bytes:
        try:
            table = generate_table(gen, counts, seed, sampler=body.sampler, temperature=body.temperature,
                                   provenance=body.provenance, where=body.where)
        except ConditionError as exc:  # a bad clause, or one no training row of a class meets
            raise RequestError(422, ["body", "where"], str(exc), "where") from None
        return encode(table, media_type, meta)

    return Response(await service.run(request, run), media_type=media_type, headers=meta_headers(meta))


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


@work.post("/v1/perturb", tags=["generate"], openapi_extra=_PERTURB_BODY, responses=_PERTURB_RESPONSES)
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
    content_type = require_content_type(request, formats.MEDIA_TYPES)
    if content_type == formats.JSON:
        if per_example is not None or noise is not None or seed is not None or provenance:
            raise RequestError(422, ["query"], "with a JSON body, send per_example, noise and seed in the body", "value_error")
        raw = await service.read_body(request)
        table, req = await service.run(request, lambda: json_rows(service, raw))
        per_example, noise, seed, provenance = req.per_example, req.noise, req.seed, req.provenance
    else:
        per_example = 1 if per_example is None else per_example
        noise = 1.0 if noise is None else noise
        raw = await service.read_body(request)
        table = await service.run(request, lambda: binary_rows(service, raw, content_type, per_example))
    service.check_rows(table.num_rows * per_example, ["body"])
    check_response_size(service, table.num_rows * per_example, media_type, provenance, ["body"])
    seed = seed if seed is not None else random_seed()
    meta = {"source_rows": table.num_rows, "per_example": per_example, "noise": noise, "seed": seed, "bundle_sha256": service.sha256}

    def run() -> bytes:
        return encode(perturb_table(gen, table, per_example, noise, seed, provenance=provenance), media_type, meta)

    return Response(await service.run(request, run), media_type=media_type, headers=meta_headers(meta))


router.include_router(keyed)
router.include_router(work)


# --- helpers -------------------------------------------------------------------------------------------


def require_content_type(request: Request, allowed: tuple[str, ...]) -> str:
    """One rule for every POST: a body type the endpoint does not take is a 415 naming the ones it does."""
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type not in allowed:
        raise RequestError(415, ["header", "content-type"], f"content-type {content_type or '(none)'} is not "
                           f"accepted here; send one of {', '.join(allowed)}", "unsupported_media_type")
    return content_type


def parse_json(model: type, raw: bytes) -> Any:
    """A JSON body validated by ``model`` (strict: a count sent as a string is refused), in a worker thread.

    pydantic parses in Rust and checks a list's length before building its items, so a ``rows`` list over the
    service's limit is refused before one Python row object exists.
    """
    try:
        return model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if any(e["type"] == "json_invalid" for e in errors):
            raise RequestError(422, ["body"], f"the body is not valid JSON: {errors[0]['msg']}", "json_invalid") from None
        too_long = [e for e in errors if e["type"] == "too_long" and tuple(e["loc"]) == ("rows",)]
        if too_long:
            raise RequestError(413, ["body", "rows"], f"{too_long[0]['ctx']['actual_length']} rows sent; this service "
                               f"takes at most {too_long[0]['ctx']['max_length']} per request", "too_many_rows") from None
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None


def json_rows(service: Service, raw: bytes) -> tuple[pa.Table, PerturbRequest]:
    req = parse_json(service.perturb_model, raw)
    service.check_rows(len(req.rows) * req.per_example, ["body", "rows"])
    try:
        return formats.rows_to_table(req.rows, service.input_schema), req
    except formats.ColumnError as exc:
        raise RequestError(422, ["body", "rows"] + ([exc.column] if exc.column else []), str(exc), "columns") from None


def binary_rows(service: Service, raw: bytes, content_type: str, per_example: int) -> pa.Table:
    settings = service.settings
    try:
        table = bodies.read_table_body(raw, content_type, service.input_schema,
                                       max_rows=settings.max_rows, per_example=per_example,
                                       max_decoded_bytes=settings.max_body_bytes * bodies.DECODED_BYTES_PER_BODY_BYTE)
    except bodies.BodyError as exc:
        kind = "too_large" if exc.status == 413 else "columns"
        raise RequestError(exc.status, ["body"] + ([exc.column] if exc.column else []), str(exc), kind) from None
    if table.num_rows == 0:
        raise RequestError(422, ["body"], "the body holds no rows; send at least one", "value_error")
    return table


def check_response_size(service: Service, rows: int, media_type: str, provenance: bool, loc: list) -> None:
    """413 before generating when the response would be larger than ``max_response_bytes`` (estimated)."""
    schema = service.generator.output_schema if provenance else service.input_schema
    size = estimate_response_bytes(schema, rows, media_type)
    limit = service.settings.max_response_bytes
    if size > limit:
        hint = "; Parquet or Arrow (Accept header) is several times smaller" if media_type == formats.JSON else ""
        raise RequestError(413, loc, f"{rows} rows as {media_type} would be about {size} bytes; this service sends "
                           f"at most {limit} per response: ask for fewer rows{hint}", "response_too_large")


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
