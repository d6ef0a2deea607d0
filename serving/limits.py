"""A pure ASGI middleware that refuses request bodies over a size limit with 413, before the app reads them.

A declared ``Content-Length`` over the limit is refused without reading a byte. A chunked body is read up to
the limit (it would be read whole by the endpoint anyway) and replayed to the app; one byte more and it is
refused.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import orjson

__all__ = ["BodyLimitMiddleware", "estimate_response_bytes"]

# Bytes per value as written, roughly from above: JSON numbers (float64 repr up to ~20 characters plus a comma),
# Arrow/Parquet fixed widths. Images dominate: an MNIST row is 784 numbers.
_JSON_NUMBER, _TEXT, _BLOB = 12, 24, 1024  # a blob: a PNG image, ~4/3 larger in JSON's base64


def _values_per_row(t: Any) -> int:
    import pyarrow as pa

    if pa.types.is_fixed_size_list(t):
        return t.list_size * _values_per_row(t.value_type)
    return 1


def estimate_response_bytes(schema: Any, rows: int, media_type: str) -> int:
    """About how many bytes ``rows`` rows of ``schema`` take as ``media_type``: checked before generating."""
    import pyarrow as pa

    total = 0
    for field in schema:
        t, n = field.type, _values_per_row(field.type)
        leaf = t.value_type if pa.types.is_fixed_size_list(t) else t
        is_number = pa.types.is_integer(leaf) or pa.types.is_floating(leaf) or pa.types.is_boolean(leaf)
        blob = pa.types.is_binary(leaf) or pa.types.is_large_binary(leaf)
        if media_type == "application/json":
            total += len(field.name) + 4 + (n * _JSON_NUMBER if is_number else (_BLOB * 4 // 3 if blob else _TEXT))
        else:
            total += n * max(1, leaf.bit_width // 8) if is_number else (_BLOB if blob else _TEXT)
    return total * rows


Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BodyLimitMiddleware:
    def __init__(self, app: Callable, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = int(max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = None
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = None
                break
        if length is not None:
            if length > self.max_body_bytes:
                await self._refuse(send, length)
                return
            # The server enforces the declared length, so the body cannot outgrow it.
            await self.app(scope, receive, send)
            return
        if scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        # No length declared: buffer up to the limit, then replay.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._refuse(send, None)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, length: int | None) -> None:
        got = f"{length} bytes" if length is not None else "more than that"
        payload = orjson.dumps(
            {
                "detail": [
                    {
                        "loc": ["body"],
                        "msg": f"request body too large: at most {self.max_body_bytes} bytes allowed, got {got}",
                        "type": "body_too_large",
                    }
                ]
            }
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
