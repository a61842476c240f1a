from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Query, Response, UploadFile
from pydantic import BaseModel

from app.api.deps import ImageStoreDep, ModelStoreDep, SettingsDep
from app.core.images import encode_png

router = APIRouter(tags=["images"])

PNG: dict[int | str, dict[str, Any]] = {200: {"content": {"image/png": {}}, "description": "a PNG image"}}


class ImageCreated(BaseModel):
    image_id: str
    width: int
    height: int
    format: str


class SampleOut(BaseModel):
    name: str
    title: str
    url: str
    width: int
    height: int
    source: str
    license: str


@router.post("/images", status_code=201, response_model=ImageCreated)
def create_image(file: Annotated[UploadFile, File()], images: ImageStoreDep) -> ImageCreated:
    """Upload an image (JPEG, PNG, WebP, GIF, BMP, TIFF); it is kept in a bounded cache for later calls."""
    stored = images.add(file.file.read(), file.filename or "file")
    return ImageCreated(
        image_id=stored.image_id, width=stored.image.width, height=stored.image.height, format=stored.format
    )


@router.get("/images/{image_id}", response_class=Response, responses=PNG)
def read_image(image_id: str, images: ImageStoreDep) -> Response:
    """The uploaded image as the server decoded it (RGB, orientation applied), as PNG."""
    return Response(images.get(image_id).png(), media_type="image/png")


@router.get("/samples", response_model=list[SampleOut])
def read_samples(images: ImageStoreDep) -> list[SampleOut]:
    """The sample gallery: real photos that ship with the app, with their source and licence."""
    return [
        SampleOut(
            name=s.name, title=s.title, url=s.url, width=s.width, height=s.height, source=s.source,
            license=s.license,
        )
        for s in images.samples.values()
    ]


@router.get("/model-input", response_class=Response, responses=PNG)
def read_model_input(
    images: ImageStoreDep,
    store: ModelStoreDep,
    settings: SettingsDep,
    image_id: Annotated[str | None, Query()] = None,
    sample: Annotated[str | None, Query()] = None,
    model: Annotated[str | None, Query()] = None,
) -> Response:
    """The picture the model is shown: the image resized and center-cropped by the model's preprocessing."""
    spec = store.spec(model or settings.default_model)
    view = spec.preprocessing.view(images.resolve(image_id, sample).image)
    return Response(encode_png(view), media_type="image/png")
