"""Page "/": classify a photo. Like every page module: build a context from the services, render one template."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.api.deps import ImageStoreDep, ModelStoreDep, SettingsDep
from app.pages.context import model_choices, photo_picker

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def classify_page(request: Request, settings: SettingsDep, store: ModelStoreDep, images: ImageStoreDep) -> HTMLResponse:
    return request.app.state.templates.TemplateResponse(  # type: ignore[no-any-return]
        request,
        "index.html",
        {
            "page": "classify",
            "models": model_choices(store),
            "default_model": settings.default_model,
            **photo_picker(settings, images),
        },
    )
