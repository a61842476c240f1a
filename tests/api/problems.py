"""Expected problem+json bodies (RFC 9457) for API tests."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

SLUGS = {404: "not-found", 409: "conflict", 413: "payload-too-large", 415: "unsupported-media-type",
         422: "invalid-parameter"}


def problem(status: int, detail: str, path: str = "/api/classify", slug: str | None = None) -> dict[str, Any]:
    slug = slug or SLUGS[status]
    return {"type": f"/problems/{slug}", "title": HTTPStatus(status).phrase, "status": status, "detail": detail,
            "instance": path}


def assert_problem(response: Any, status: int, detail: str, **extra: Any) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    body.pop("errors", None)
    expected = {**problem(status, detail, response.request.url.path), **extra}
    assert body == expected


def assert_problem_says(response: Any, status: int, *fragments: str) -> dict[str, Any]:
    """A problem+json body with every RFC 9457 member, the given status, and each fragment in its detail."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert set(body) >= {"type", "title", "status", "detail", "instance"} and body["status"] == status
    for fragment in fragments:
        assert fragment in body["detail"], body["detail"]
    return body
