"""A pure ASGI middleware that refuses request bodies over a size limit with 413, before the app reads them.

A declared ``Content-Length`` over the limit is refused without reading a byte. A chunked body is read up to
the limit (it would be read whole by the endpoint anyway) and replayed to the app; one byte more and it is
refused.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import orjson

__all__ = ["BodyLimitMiddleware"]

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
