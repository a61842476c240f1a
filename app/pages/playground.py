"""The convolution playground page; its limits come from the same constants the API validates with."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.api.deps import ImageStoreDep, SettingsDep
from app.cnn import conv
from app.pages.context import photo_picker

router = APIRouter(include_in_schema=False)


@router.get("/playground", response_class=HTMLResponse)
def playground_page(request: Request, settings: SettingsDep, images: ImageStoreDep) -> HTMLResponse:
    return request.app.state.templates.TemplateResponse(  # type: ignore[no-any-return]
        request,
        "playground.html",
        {
            "page": "playground",
            **photo_picker(settings, images),
            "max_kernel": conv.MAX_KERNEL,
            "max_stride": conv.MAX_STRIDE,
            "max_dilation": conv.MAX_DILATION,
            "max_layers": settings.convolve_max_layers,
        },
    )
