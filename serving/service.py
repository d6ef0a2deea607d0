"""The service's state, one per process: the loaded generator, its class names, the API key and the limiter
that keeps inference in at most ``settings.max_concurrent`` worker threads.

Endpoints reach it through ``get_service`` (a FastAPI dependency reading ``request.app.state.service``).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any, Callable

import anyio
import pyarrow as pa
from fastapi import Depends, Request
from pydantic import Field, create_model

from augment.constants import SAMPLERS
from augment.errors import AugmentError
from serving import formats
from serving.models import PerturbRequest, RequestError
from serving.settings import ServeSettings, read_api_key

__all__ = ["Service", "get_service", "admitted", "model_info", "random_seed"]

log = logging.getLogger("augment.serving")


class Service:
    def __init__(self, settings: ServeSettings, generator: Any, loader: Callable[[], Any] | None) -> None:
        self.settings = settings
        self.generator = None
        self.load_error: str | None = None
        self.loader = loader
        self.api_key = read_api_key(settings)
        self.limiter = anyio.CapacityLimiter(settings.max_concurrent)
        self.in_flight = 0  # admitted POSTs: running, waiting for a slot, or sending their body
        # rows limited in the model itself, so an over-long list is refused before its rows are built
        self.perturb_model = create_model("PerturbRequest", __base__=PerturbRequest, rows=(
            list[dict[str, Any]], Field(min_length=1, max_length=settings.max_rows,
                                        description=PerturbRequest.model_fields["rows"].description)))
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

    async def read_body(self, request: Request) -> bytes:
        """The body, within the request's time budget (408 past it: a client that sends too slowly)."""
        try:
            with anyio.fail_after(_remaining(request)):
                return await request.body()
        except TimeoutError:
            raise RequestError(408, ["body"], f"the body did not arrive within {self.settings.request_timeout:g} s",
                               "request_timeout", headers={"Connection": "close"}) from None

    async def run(self, request: Request, fn: Callable[[], Any]) -> Any:
        """``fn`` in a worker thread once one of ``max_concurrent`` slots is free; 503 if none frees up within
        the request's time budget. The work itself is bounded by the row and size limits, not interrupted."""
        try:
            with anyio.fail_after(_remaining(request)):
                await self.limiter.acquire()
        except TimeoutError:
            raise RequestError(503, [], f"the service is busy: no inference slot freed up within "
                               f"{self.settings.request_timeout:g} s; retry later", "busy",
                               headers={"Retry-After": "1"}) from None
        try:
            return await anyio.to_thread.run_sync(fn)
        finally:
            self.limiter.release()

    def class_index(self, name: str, loc: list) -> int:
        try:
            return self.class_by_name[name]
        except KeyError:
            known = ", ".join(repr(n) for n in self.class_names)
            raise RequestError(422, loc, f"unknown class {name!r}; known classes: {known}", "class_name") from None

    def check_rows(self, rows: int, loc: list) -> None:
        if rows > self.settings.max_rows:
            raise RequestError(
                413, loc, f"{rows} rows asked for; this service sends at most {self.settings.max_rows} per request",
                "too_many_rows",
            )


def get_service(request: Request) -> Service:
    """The dependency every endpoint takes: the one ``Service`` of this app."""
    return request.app.state.service


def _remaining(request: Request) -> float:
    return max(0.0, request.state.deadline - anyio.current_time())


async def admitted(request: Request, service: Service = Depends(get_service)) -> AsyncIterator[None]:
    """Admit a POST, or refuse it with 503 + Retry-After when ``max_concurrent + max_queue`` are already in."""
    settings = service.settings
    if service.in_flight >= settings.max_concurrent + settings.max_queue:
        raise RequestError(503, [], f"the service is at capacity ({service.in_flight} requests in progress or "
                           "queued); retry later", "busy", headers={"Retry-After": "1"})
    request.state.deadline = anyio.current_time() + settings.request_timeout
    service.in_flight += 1
    try:
        yield
    finally:
        service.in_flight -= 1


def random_seed() -> int:
    # 53 bits: the seed a response reports survives a round trip through a JavaScript number.
    return secrets.randbits(53)


def model_info(service: Service) -> dict:
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
        # Metrics and settings only: the training data's path, the host's platform and library versions stay
        # out of what any client may read.
        "training": {k: v for k, v in (meta.get("training") or {}).items() if k in ("config", "metrics")},
        "samplers": list(SAMPLERS),
        "media_types": list(formats.MEDIA_TYPES),
        "limits": {name: getattr(service.settings, name)
                   for name in ("max_rows", "max_body_bytes", "max_response_bytes", "request_timeout")},
    }
