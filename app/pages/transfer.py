"""The transfer-learning page: datasets, the two modes, blocks to unfreeze, live training, evaluation."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.api.deps import SettingsDep
from app.services.datasets import DEMOS

router = APIRouter(include_in_schema=False)


@router.get("/transfer", response_class=HTMLResponse)
def transfer_page(request: Request, settings: SettingsDep) -> HTMLResponse:
    return request.app.state.templates.TemplateResponse(  # type: ignore[no-any-return]
        request,
        "transfer.html",
        {
            "page": "transfer",
            "demos": DEMOS,
            "base_model": settings.default_model,
            "max_zip_mb": settings.dataset_max_zip_bytes / 1_000_000,
        },
    )
