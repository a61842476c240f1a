"""ASGI middleware: a body-size limit enforced while the body streams in, and one log line per request."""

from __future__ import annotations

import json
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import PROBLEM_JSON, BodyTooLarge, problem_body

log = logging.getLogger("convscope.requests")


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes`` with 413: at once from Content-Length, else once that many arrived."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            too_large = BodyTooLarge(self.max_bytes)
            await _send_problem(send, too_large.status_code, too_large.detail, scope["path"], too_large.slug)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI passes HTTPException through body parsing; the app's handler makes it problem+json.
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited, send)


async def _send_problem(send: Send, status: int, detail: str, instance: str, slug: str) -> None:
    body = json.dumps(problem_body(status, detail, instance, slug)).encode()
    headers = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestLogMiddleware:
    """``METHOD /path -> status in ms`` for every HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            log.info("%s %s -> %d in %.1f ms", scope["method"], scope["path"], status,
                     (time.perf_counter() - start) * 1000)
