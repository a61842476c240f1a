"""Page "/": classify a photo. Like every page module: build a context from the services, render one template."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.api.deps import ImageStoreDep, ModelStoreDep, SettingsDep

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def classify_page(request: Request, settings: SettingsDep, store: ModelStoreDep, images: ImageStoreDep) -> HTMLResponse:
    models = [
        {
            "name": s.name,
            "title": s.title,
            "available": store.weights_status(s.name).available,
            "size": f"{s.preprocessing.crop_size}×{s.preprocessing.crop_size}",
            "summary": f"{s.num_params / 1e6:.1f}M parameters · input 3×{s.preprocessing.crop_size}×"
            f"{s.preprocessing.crop_size} · {s.num_classes} classes",
        }
        for s in store.specs()
    ]
    return request.app.state.templates.TemplateResponse(  # type: ignore[no-any-return]
        request,
        "index.html",
        {
            "page": "classify",
            "models": models,
            "default_model": settings.default_model,
            "samples": list(images.samples.values()),
            "max_upload_mb": settings.max_upload_bytes / 1_000_000,
        },
    )
