"""Fuzz every operation of the app's own OpenAPI schema, in-process: no input may produce a 5xx.

New endpoints are covered as they land. Examples per operation are bounded so the run stays ~2 minutes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from app.core.config import Settings
from app.main import create_app

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 100


# Built at import (schemathesis parametrizes at collection); the heavy lifespan runs on the first call.
_root = Path(tempfile.mkdtemp(prefix="convscope-fuzz-"))
schema = schemathesis.openapi.from_asgi(
    "/openapi.json", create_app(Settings(data_dir=_root / "data", models_dir=_root / "models"))
)


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case) -> None:
    response = case.call()
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"
    if response.status_code >= 400:
        (content_type,) = response.headers["content-type"]
        assert content_type.startswith("application/problem+json"), response.text
        assert response.json()["status"] == response.status_code
