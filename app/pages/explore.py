"""The explore page: a model's architecture, feature maps, filters, head and explanations for one image."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.api.deps import ImageStoreDep, ModelStoreDep, SettingsDep

router = APIRouter(include_in_schema=False)


@router.get("/explore", response_class=HTMLResponse)
def explore_page(
    request: Request, settings: SettingsDep, store: ModelStoreDep, images: ImageStoreDep
) -> HTMLResponse:
    models = [
        {"name": s.name, "title": s.title, "available": store.weights_status(s.name).available}
        for s in store.specs()
    ]
    return request.app.state.templates.TemplateResponse(  # type: ignore[no-any-return]
        request,
        "explore.html",
        {
            "page": "explore",
            "models": models,
            "default_model": settings.default_model,
            "samples": list(images.samples.values()),
            "max_upload_mb": settings.max_upload_bytes / 1_000_000,
        },
    )
