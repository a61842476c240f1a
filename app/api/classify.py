"""``POST /api/classify``: one endpoint for JSON (an uploaded image or a sample) and multipart uploads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import UploadFile

from app.api.deps import ImageStoreDep, ModelStoreDep, SettingsDep
from app.core.errors import BodyTooLarge, InvalidParameter, UnsupportedMediaType
from app.services.classification import Classification, classify_images, classify_uploads

router = APIRouter(tags=["classify"])


class ClassifyRequest(BaseModel):
    """JSON form: classify an uploaded image (``image_id``) or a sample (``sample``)."""

    image_id: str | None = Field(None, description="from POST /api/images")
    sample: str | None = Field(None, description="a name from GET /api/samples")
    model: str | None = Field(None, description="a name from GET /api/models; default: the default model")
    top_k: int = Field(5, ge=1, description="classes to return; more than the model has is clamped")


class PredictionOut(BaseModel):
    index: int
    label: str
    probability: float


class ClassificationOut(BaseModel):
    model: str
    image: str  # the file name, image_id or sample that was classified
    predictions: list[PredictionOut]
    timings_ms: dict[str, float]  # preprocess, queue_and_forward, total (and decode for uploads)
    forward_batch: int  # images in the forward pass that served this request (concurrent ones share it)


MULTIPART_SCHEMA = {
    "type": "object",
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "one image"},
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}, "description": "a batch"},
        "model": {"type": "string"},
        "top_k": {"type": "integer", "minimum": 1, "default": 5},
    },
}
OPENAPI_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": ClassifyRequest.model_json_schema()},
            "multipart/form-data": {"schema": MULTIPART_SCHEMA},
        },
    }
}


@dataclass
class ClassifyInput:
    model: str | None
    top_k: int
    reference: ClassifyRequest | None = None  # JSON form
    uploads: list[tuple[str, bytes]] | None = None  # multipart form: (file name, bytes)
    batch: bool = False


def _parse_json(raw: bytes) -> ClassifyRequest:
    try:
        payload: Any = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidParameter(f"the body is not valid JSON: {exc}.") from exc
    try:
        return ClassifyRequest.model_validate(payload)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc


async def parse_classify_input(request: Request, settings: SettingsDep) -> ClassifyInput:
    """Read the body as JSON or multipart; decoding waits for the worker thread."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        body = _parse_json(await request.body())
        return ClassifyInput(body.model, body.top_k, reference=body)
    if content_type != "multipart/form-data":
        raise UnsupportedMediaType(
            f"send application/json or multipart/form-data, not {content_type or 'no content type'}."
        )
    try:
        form = await request.form(max_files=settings.max_batch, max_fields=16)
    except BodyTooLarge:
        raise
    except Exception as exc:  # starlette raises MultiPartException / HTTPException with a reason
        raise InvalidParameter(f"the multipart body could not be read: {getattr(exc, 'detail', exc)}") from exc
    single, batch = form.getlist("file"), form.getlist("files")
    if bool(single) == bool(batch) or len(single) > 1:
        raise InvalidParameter("send exactly one image as 'file', or one or more as 'files'.")
    uploads = []
    for item in single or batch:
        if not isinstance(item, UploadFile):
            raise InvalidParameter("'file' and 'files' must be file uploads, not text fields.")
        uploads.append((item.filename or "file", await item.read()))
    model, top_k = form.get("model"), form.get("top_k", "5")
    if not isinstance(model, str | None) or not isinstance(top_k, str):
        raise InvalidParameter("'model' and 'top_k' must be text fields.")
    try:
        k = int(top_k)
    except ValueError:
        raise InvalidParameter(f"top_k must be a whole number >= 1, got {top_k!r}.") from None
    if k < 1:
        raise InvalidParameter(f"top_k must be >= 1, got {k}.")
    return ClassifyInput(model or None, k, uploads=uploads, batch=bool(batch))


def _out(result: Classification, image: str) -> ClassificationOut:
    return ClassificationOut(
        model=result.model,
        image=image,
        predictions=[PredictionOut(index=p.index, label=p.label, probability=p.probability)
                     for p in result.predictions],
        timings_ms=result.timings_ms,
        forward_batch=result.forward_batch,
    )


@router.post(
    "/classify",
    response_model=ClassificationOut | list[ClassificationOut],
    openapi_extra=OPENAPI_BODY,
    responses={409: {"description": "the model's weights are not available"}},
)
def create_classification(
    data: Annotated[ClassifyInput, Depends(parse_classify_input)],
    settings: SettingsDep,
    store: ModelStoreDep,
    images: ImageStoreDep,
) -> ClassificationOut | list[ClassificationOut]:
    """Top-k ImageNet (or fine-tuned) classes for one image, or for a batch in one forward pass.

    JSON: ``{"image_id" | "sample", "model", "top_k"}``. Multipart: ``file`` (one) or ``files`` (a batch),
    with optional ``model`` and ``top_k`` fields.
    """
    model = data.model or settings.default_model
    if data.reference is not None:
        stored = images.resolve(data.reference.image_id, data.reference.sample)
        (result,) = classify_images(store, [stored.image], model, data.top_k)
        return _out(result, data.reference.image_id or data.reference.sample or "")
    assert data.uploads is not None
    results = classify_uploads(store, images, data.uploads, model, data.top_k)
    outs = [_out(r, name) for r, (name, _) in zip(results, data.uploads, strict=True)]
    return outs if data.batch else outs[0]
