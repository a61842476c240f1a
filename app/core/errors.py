"""One error shape everywhere: RFC 9457 problem details (``application/problem+json``).

Domain code raises subclasses of :class:`ConvScopeError`; :func:`install_error_handlers` maps them,
FastAPI's validation errors and Starlette's HTTP errors to the same JSON body. Anything unexpected is
logged and answered with a 500 that reveals no internals.
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("convscope.errors")

PROBLEM_JSON = "application/problem+json"


class ConvScopeError(ValueError):
    """Base of every error the app explains to its user. ``detail`` is shown to the person."""

    status: int = 422
    slug: str = "invalid-parameter"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class InvalidParameter(ConvScopeError):
    status, slug = 422, "invalid-parameter"


class NotFound(ConvScopeError):
    status, slug = 404, "not-found"


class PayloadTooLarge(ConvScopeError):
    status, slug = 413, "payload-too-large"


class UnsupportedMediaType(ConvScopeError):
    status, slug = 415, "unsupported-media-type"


class Conflict(ConvScopeError):
    """The request is valid but the resource is not in a state to serve it (no trained weights, say)."""

    status, slug = 409, "conflict"


class BodyTooLarge(StarletteHTTPException):
    """Raised while a request body streams in; an HTTPException so that FastAPI's body parsing passes it on."""

    slug = "payload-too-large"

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"the request body is larger than the limit of {max_bytes:,} bytes.")


MAX_DETAIL = 8000  # a detail quoting a hostile 1 MB name is cut, not echoed whole


def problem_body(status: int, detail: str, instance: str, slug: str | None = None, **extra: Any) -> dict[str, Any]:
    if len(detail) > MAX_DETAIL:
        detail = detail[:MAX_DETAIL] + "… (cut)"
    return {
        "type": f"/problems/{slug}" if slug else "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": instance,
        **extra,
    }


def problem(status: int, detail: str, instance: str, slug: str | None = None, **extra: Any) -> JSONResponse:
    body = problem_body(status, detail, instance, slug, **extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    """``layers.0.kernel`` from pydantic's location, without its internal steps (``constrained-int``,
    ``list[list[float]]``, ``function-after[...]``) that name no field."""
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "form") and not _INTERNAL.search(str(p))]
    return ".".join(parts) or "request"


_INTERNAL = re.compile(r"[\[\]-]")


async def _convscope_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ConvScopeError)
    return problem(exc.status, exc.detail, request.url.path, exc.slug, **exc.extra)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    whole_body = any(tuple(e.get("loc", ())) == ("body",) for e in exc.errors())
    if whole_body and content_type and not content_type.endswith("json"):
        # FastAPI only parses JSON bodies sent as JSON: say so rather than "Input should be a valid dictionary"
        detail = f"send the body as application/json, not {content_type}."
        return problem(415, detail, request.url.path, "unsupported-media-type")
    errors = [
        {"field": "body" if e.get("type") == "json_invalid" else _location(e.get("loc", ())),
         "message": str(e.get("msg", ""))}
        for e in exc.errors()
    ]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
    return problem(422, detail, request.url.path, "invalid-parameter", errors=errors)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    response = problem(exc.status_code, str(exc.detail), request.url.path, getattr(exc, "slug", None))
    for key, value in (exc.headers or {}).items():
        response.headers[key] = value
    return response


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(500, "Internal error: the server logged it.", request.url.path, "internal-error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ConvScopeError, _convscope_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
