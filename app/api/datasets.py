"""Datasets for transfer learning: upload a zip (one folder per class), or make a demo; list, view, delete."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Response, UploadFile
from pydantic import BaseModel, Field

from app.api.deps import DatasetStoreDep, SettingsDep
from app.core.errors import PayloadTooLarge

router = APIRouter(tags=["datasets"])

THUMBNAILS_PER_CLASS = 4
PNG: dict[int | str, dict[str, Any]] = {200: {"content": {"image/png": {}}, "description": "a PNG image"}}


class DatasetClass(BaseModel):
    name: str
    count: int
    thumbnails: list[str]  # URLs of the first few images, 96 px PNGs


class Skipped(BaseModel):
    file: str
    reason: str


class DatasetOut(BaseModel):
    dataset_id: str
    name: str
    source: str  # "upload" or "demo:<name>"
    created: float  # seconds since the epoch
    num_images: int
    classes: list[DatasetClass]
    skipped: list[Skipped]


class DemoRequest(BaseModel):
    name: Literal["digits", "faces"] = Field(
        "digits", description="digits: 10 classes; faces: face / not_face"
    )
    per_class: int = Field(30, ge=2, le=100, description="images per class")


def dataset_out(doc: dict[str, Any]) -> DatasetOut:
    first: dict[int, list[int]] = {}
    for index, (label, _) in enumerate(doc["items"]):
        shown = first.setdefault(label, [])
        if len(shown) < THUMBNAILS_PER_CLASS:
            shown.append(index)
    return DatasetOut(
        dataset_id=doc["id"],
        name=doc["name"],
        source=doc["source"],
        created=doc["created"],
        num_images=len(doc["items"]),
        classes=[
            DatasetClass(
                name=c["name"],
                count=c["count"],
                thumbnails=[f"/api/datasets/{doc['id']}/images/{i}" for i in first.get(label, [])],
            )
            for label, c in enumerate(doc["classes"])
        ],
        skipped=[Skipped(**s) for s in doc["skipped"]],
    )


@router.post("/datasets", status_code=201, response_model=DatasetOut, responses={413: {}, 422: {}})
def create_dataset(
    file: Annotated[UploadFile, File(description="a zip with one folder of images per class")],
    datasets: DatasetStoreDep,
    settings: SettingsDep,
    name: Annotated[str | None, Form(max_length=100)] = None,
) -> DatasetOut:
    """Unpack a zip in the ImageFolder layout (``cats/1.jpg``, ``dogs/7.png``; one top folder is allowed).

    Non-image files are skipped and listed in ``skipped``. At least 2 classes with 2 images each.
    """
    data = file.file.read(settings.dataset_max_zip_bytes + 1)
    if len(data) > settings.dataset_max_zip_bytes:
        raise PayloadTooLarge(
            f"the zip is larger than the limit of {settings.dataset_max_zip_bytes:,} bytes."
        )
    default = (file.filename or "dataset").removesuffix(".zip")[:100]
    return dataset_out(datasets.create_from_zip(data, name or default))


@router.post("/datasets/demo", status_code=201, response_model=DatasetOut)
def create_demo_dataset(body: DemoRequest, datasets: DatasetStoreDep) -> DatasetOut:
    """A built-in dataset that works offline, from images shipped in scikit-learn / scikit-image."""
    return dataset_out(datasets.create_demo(body.name, body.per_class))


@router.get("/datasets", response_model=list[DatasetOut])
def read_datasets(datasets: DatasetStoreDep) -> list[DatasetOut]:
    return [dataset_out(d) for d in datasets.all()]


@router.get("/datasets/{dataset_id}", response_model=DatasetOut)
def read_dataset(dataset_id: str, datasets: DatasetStoreDep) -> DatasetOut:
    return dataset_out(datasets.get(dataset_id))


@router.get("/datasets/{dataset_id}/images/{index}", response_class=Response, responses=PNG)
def read_dataset_image(dataset_id: str, index: int, datasets: DatasetStoreDep) -> Response:
    """One image of the dataset as a thumbnail (at most 96 px on a side)."""
    return Response(datasets.thumbnail(dataset_id, index), media_type="image/png")


@router.delete("/datasets/{dataset_id}", status_code=204, responses={409: {}})
def delete_dataset(dataset_id: str, datasets: DatasetStoreDep) -> Response:
    """Delete a dataset; 409 while a queued or running job uses it. Models trained on it stay."""
    datasets.delete(dataset_id)
    return Response(status_code=204)
