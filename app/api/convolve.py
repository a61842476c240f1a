"""The convolution playground: ``POST /api/convolve``, ``POST /api/convolve/steps``, ``GET .../presets``."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

from app.api.deps import ImageStoreDep, ModelStoreDep, SettingsDep
from app.cnn import conv
from app.core.errors import InvalidParameter, UnsupportedMediaType
from app.services.image_store import ImageStore
from app.services.playground import Convolution, convolve_image, explain_steps, spec_errors

router = APIRouter(tags=["convolve"])

Stride = Annotated[int, Field(ge=1, le=conv.MAX_STRIDE)]
Dilation = Annotated[int, Field(ge=1, le=conv.MAX_DILATION)]
Pad = Annotated[int, Field(ge=0, le=64)]
PoolSide = Annotated[int, Field(ge=1, le=conv.MAX_KERNEL)]
PoolPad = Annotated[int, Field(ge=0, le=15)]
Row = Annotated[list[float], Field(max_length=conv.MAX_KERNEL)]
Matrix = Annotated[list[Row], Field(max_length=conv.MAX_KERNEL)]
Stack = Annotated[list[Matrix], Field(max_length=conv.MAX_FILTERS)]
Bank = Annotated[list[Stack], Field(max_length=conv.MAX_FILTERS)]


class ConvLayerIn(BaseModel):
    """A convolution: ``kernel`` (2-D: per channel; 3-D: one filter as deep as the input; 4-D: a bank of
    filters) or ``preset`` (a name from ``GET /api/convolve/presets``), exactly one of them."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["conv"]
    kernel: Matrix | list[Matrix] | list[Stack] | None = Field(
        None, description="2-D [[...]], 3-D [C][kh][kw] or 4-D [N][C][kh][kw]; each side 1-31")
    preset: str | None = Field(None, description="a preset kernel name, applied to each channel")
    stride: Stride | tuple[Stride, Stride] = 1
    padding: Pad | tuple[Pad, Pad] | Literal["valid", "same", "full"] = 0
    padding_mode: Literal["zeros", "reflect", "replicate", "circular"] = "zeros"
    dilation: Dilation | tuple[Dilation, Dilation] = 1
    bias: float | Annotated[list[float], Field(max_length=conv.MAX_FILTERS)] = 0.0


class ActivationLayerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["activation"]
    fn: Literal["relu", "leaky_relu", "sigmoid", "tanh", "abs"] = "relu"
    negative_slope: float = Field(0.01, ge=0, le=1, description="leaky_relu only")


class PoolLayerIn(BaseModel):
    """Max or average pooling (padding is ignored by both), or global pooling to 1×1."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["pool"]
    mode: Literal["max", "avg", "global_avg", "global_max"] = "max"
    kernel_size: PoolSide | tuple[PoolSide, PoolSide] = 2
    stride: Stride | tuple[Stride, Stride] | None = Field(None, description="default: the kernel size")
    padding: PoolPad | tuple[PoolPad, PoolPad] = Field(0, description="at most half the kernel size")
    ceil_mode: bool = False


LayerIn = Annotated[ConvLayerIn | ActivationLayerIn | PoolLayerIn, Field(discriminator="type")]


class RenderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["clip", "minmax", "abs", "diverging"] = Field(
        "clip", description="signed values: clip to 0-255, stretch min-max, absolute value, blue-white-red")
    format: Literal["auto", "png", "jpeg", "webp"] = Field(
        "auto", description="auto: PNG up to 256×256 pixels, JPEG above (measured fastest)")


class ConvolveSpec(BaseModel):
    """The pipeline, without the image: the multipart form's ``spec`` field."""

    model_config = ConfigDict(extra="forbid")
    grayscale: bool = Field(False, description="convert to one luma channel first")
    max_side: int = Field(1024, ge=16, le=8192, description="the image is scaled down to this longest side")
    layers: list[LayerIn] = Field(min_length=1, max_length=64)
    render: RenderIn = RenderIn()


class ConvolveRequest(ConvolveSpec):
    """JSON form: an uploaded image (``image_id``) or a sample (``sample``) and the pipeline."""

    image_id: str | None = Field(None, description="from POST /api/images")
    sample: str | None = Field(None, description="a name from GET /api/samples")


class StatsOut(BaseModel):
    min: float
    max: float
    mean: float
    std: float


class LayerOut(BaseModel):
    index: int
    type: str
    output_shape: list[int] = Field(description="[C, H, W]")
    formula: str = Field(description="o = floor((i + 2p − d(k−1) − 1)/s) + 1 per axis, numbers filled in")
    stats: StatsOut
    image: str = Field(description="data URL (PNG or JPEG)")
    image_size: list[int] = Field(description="[width, height] of the picture")
    values: list[list[list[float]]] | None = Field(None, description="[C][H][W] when H, W <= 64")


class ConvolveResponse(BaseModel):
    input_shape: list[int] = Field(description="[C, H, W] after scaling and grayscale")
    layers: list[LayerOut]
    timings_ms: dict[str, float]


class PresetOut(BaseModel):
    name: str
    description: str
    kernel: list[list[float]]


class ConvolveStepsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: Annotated[list[Annotated[list[float], Field(min_length=1, max_length=32)]],
                     Field(min_length=1, max_length=32)] = Field(description="up to 32×32 numbers")
    layer: LayerIn


class StepOut(BaseModel):
    row: int
    col: int
    rows: list[int] = Field(description="padded-input rows under the window")
    cols: list[int]
    window: list[list[float | None]] = Field(description="values under the window; null: pool padding")
    is_padding: list[list[bool]]
    value: float
    products: list[list[float]] | None = None
    sum: float | None = None
    bias: float | None = None
    argmax: list[int] | None = None
    count: int | None = None


class ConvolveStepsResponse(BaseModel):
    output: list[list[float]]
    output_shape: list[int] = Field(description="[H, W]")
    formula: str
    padded: list[list[float | None]]
    is_padding: list[list[bool]]
    padding: dict[str, int]
    kernel: list[list[float]] | None
    steps: list[StepOut]


def to_layer(spec: ConvLayerIn | ActivationLayerIn | PoolLayerIn, field: str) -> conv.Layer:
    """The engine's layer for a request layer; a bad kernel is a 422 naming ``field``."""
    if isinstance(spec, ActivationLayerIn):
        return conv.ActivationLayer(spec.fn, spec.negative_slope)
    if isinstance(spec, PoolLayerIn):
        pair = conv.pair_of
        stride = None if spec.stride is None else pair(spec.stride)
        return conv.PoolLayer(spec.mode, pair(spec.kernel_size), stride, pair(spec.padding), spec.ceil_mode)
    if (spec.kernel is None) == (spec.preset is None):
        raise InvalidParameter(f"{field}: give exactly one of kernel and preset.",
                               errors=[{"field": f"{field}.kernel", "message": "give kernel or preset"}])
    with spec_errors():
        kernel = spec.preset if spec.preset is not None else spec.kernel
        return conv.conv_layer(
            kernel, field=f"{field}.kernel", stride=spec.stride, padding=spec.padding,
            padding_mode=spec.padding_mode, dilation=spec.dilation, bias=spec.bias,
        )


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """The request schema with its ``$defs`` inlined, so it can sit in ``openapi_extra`` (no cycles here)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return walk(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: walk(v) for k, v in node.items() if k != "discriminator"}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)  # type: ignore[no-any-return]


OPENAPI_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _inline_refs(ConvolveRequest.model_json_schema())},
            "multipart/form-data": {"schema": {
                "type": "object",
                "required": ["file", "spec"],
                "properties": {
                    "file": {"type": "string", "format": "binary", "description": "one image"},
                    "spec": {"type": "string", "description": "JSON: grayscale, max_side, layers, render"},
                },
            }},
        },
    }
}


PROBLEM_SCHEMA = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "instance"],
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
        "detail": {"type": "string"}, "instance": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}


def _problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    reasons = {404: "unknown image_id or sample", 413: "the upload is too large",
               415: "not JSON or multipart, or the file is not an image",
               422: "a bad field: the detail names it and the allowed range"}
    content = {"application/problem+json": {"schema": PROBLEM_SCHEMA}}
    return {code: {"description": reasons[code], "content": content} for code in codes}


def _validated(model: type[ConvolveSpec], payload: Any) -> ConvolveSpec:
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc


def _json(raw: bytes | str, what: str) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidParameter(f"{what} is not valid JSON: {exc}.") from exc


async def parse_convolve_input(request: Request) -> tuple[ConvolveSpec, bytes | None, str | None]:
    """(spec, uploaded bytes, file name) from a JSON body or a multipart ``file`` + ``spec`` form."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        return _validated(ConvolveRequest, _json(await request.body(), "the body")), None, None
    if content_type != "multipart/form-data":
        raise UnsupportedMediaType(
            f"send application/json or multipart/form-data, not {content_type or 'no content type'}.")
    try:
        form = await request.form(max_files=1, max_fields=4)
    except Exception as exc:  # starlette raises MultiPartException / HTTPException with a reason
        reason = getattr(exc, "detail", exc)
        raise InvalidParameter(f"the multipart body could not be read: {reason}") from exc
    upload, spec = form.get("file"), form.get("spec")
    if not isinstance(upload, UploadFile):
        raise InvalidParameter("file: send one image as the file upload 'file'.")
    if not isinstance(spec, str):
        raise InvalidParameter("spec: send the pipeline as JSON text in the form field 'spec'.")
    return _validated(ConvolveSpec, _json(spec, "spec")), await upload.read(), upload.filename or "file"


def _out(result: Convolution, specs: list[Any]) -> ConvolveResponse:
    return ConvolveResponse(
        input_shape=list(result.input_shape),
        layers=[
            LayerOut(index=i, type=spec.type, output_shape=list(layer.output_shape), formula=layer.formula,
                     stats=StatsOut(**layer.stats), image=layer.image, image_size=list(layer.image_size),
                     values=layer.values)
            for i, (layer, spec) in enumerate(zip(result.layers, specs, strict=True))
        ],
        timings_ms=result.timings_ms,
    )


@router.post("/convolve", response_model=ConvolveResponse, openapi_extra=OPENAPI_BODY,
             responses=_problems(404, 413, 415, 422))
def create_convolution(
    data: Annotated[tuple[ConvolveSpec, bytes | None, str | None], Depends(parse_convolve_input)],
    settings: SettingsDep,
    images: ImageStoreDep,
    store: ModelStoreDep,
) -> ConvolveResponse:
    """Apply a pipeline of conv, activation and pool layers to a photo; every layer's shape, formula, stats
    and picture (raw values too when at most 64×64).

    JSON: ``{"image_id" | "sample", "grayscale", "max_side", "layers": [...], "render": {...}}``.
    Multipart: ``file`` (an image) and ``spec`` (the same JSON without image_id/sample).
    """
    spec, raw, name = data
    layers = [to_layer(layer, f"layers[{i}]") for i, layer in enumerate(spec.layers)]
    image = _image(images, spec, raw, name)
    result = convolve_image(image, layers, settings, grayscale=spec.grayscale, max_side=spec.max_side,
                            mode=spec.render.mode, fmt=spec.render.format, slot=store.inference_slot())
    return _out(result, spec.layers)


def _image(images: ImageStore, spec: ConvolveSpec, raw: bytes | None, name: str | None) -> Image.Image:
    if raw is not None:
        return images.decode(raw, name or "file").image
    assert isinstance(spec, ConvolveRequest)
    return images.resolve(spec.image_id, spec.sample).image


@router.post("/convolve/steps", response_model=ConvolveStepsResponse, responses=_problems(422))
def create_convolution_steps(body: ConvolveStepsRequest) -> ConvolveStepsResponse:
    """The arithmetic behind one layer on a small matrix: for every output cell, the window on the padded
    input (padding cells marked), the element-wise products and their sum plus bias, or for pooling the
    window and the chosen maximum or average."""
    result = explain_steps(body.input, to_layer(body.layer, "layer"))
    return ConvolveStepsResponse(
        output=result.output, output_shape=[len(result.output), len(result.output[0])],
        formula=result.formula,
        padded=result.padded, is_padding=result.is_padding, padding=result.padding, kernel=result.kernel,
        steps=[StepOut(**vars(step)) for step in result.steps],
    )


@router.get("/convolve/presets", response_model=list[PresetOut])
def read_presets() -> list[PresetOut]:
    """The preset kernels, each with a one-line description."""
    return [PresetOut(name=p.name, description=p.description, kernel=[list(r) for r in p.kernel])
            for p in conv.PRESETS.values()]
