"""Look inside a model: architecture, filters, feature maps, the head and explanations (``/api/...``)."""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from PIL import Image
from pydantic import BaseModel, Field

from app.api.deps import ExplorerDep, ImageStoreDep, SettingsDep
from app.cnn.features import ChannelStats, Grid
from app.cnn.inspect import LayerInfo, ReceptiveField
from app.core.images import encode_png

router = APIRouter(tags=["explore"])

CONFLICT: dict[int | str, dict[str, Any]] = {409: {"description": "no trained weights for the model here"}}


def data_url(image: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_png(image)).decode("ascii")


# --- schemas ---------------------------------------------------------------------------------------------


class ImageRef(BaseModel):
    image_id: str | None = Field(None, description="from POST /api/images")
    sample: str | None = Field(None, description="a name from GET /api/samples")
    model: str | None = Field(None, description="a name from GET /api/models; default: the default model")


class ReceptiveFieldOut(BaseModel):
    size: list[int]  # [h, w] input pixels one unit sees
    jump: list[int]  # [h, w] input pixels between neighbouring units (cumulative stride)
    # [y, x] input-pixel centre of unit (0, 0); unit (i, j) is centred at start + (i, j) * jump
    start: list[float]

    @staticmethod
    def of(rf: ReceptiveField | None) -> ReceptiveFieldOut | None:
        if rf is None:
            return None
        return ReceptiveFieldOut(size=list(rf.size), jump=list(rf.jump), start=list(rf.start))


class LayerOut(BaseModel):
    path: str
    type: str
    depth: int
    parent: str
    is_leaf: bool
    output_shape: list[int] | None
    params_weight: int
    params_bias: int
    params_other: int
    params_total: int  # this module and everything below it
    trainable: bool
    kernel_size: list[int] | None
    stride: list[int] | None
    padding: list[int] | str | None
    dilation: list[int] | None
    groups: int | None
    receptive_field: ReceptiveFieldOut | None
    fc_equivalent_params: int | None  # a fully connected layer from the same input to the same output

    @staticmethod
    def of(info: LayerInfo) -> LayerOut:
        return LayerOut(
            path=info.path, type=info.type, depth=info.depth, parent=info.parent, is_leaf=info.is_leaf,
            output_shape=info.output_shape, params_weight=info.params_weight, params_bias=info.params_bias,
            params_other=info.params_other, params_total=info.params_total, trainable=info.trainable,
            kernel_size=info.kernel_size, stride=info.stride, padding=info.padding, dilation=info.dilation,
            groups=info.groups, receptive_field=ReceptiveFieldOut.of(info.receptive_field),
            fc_equivalent_params=info.fc_equivalent_params,
        )


class ArchitectureOut(BaseModel):
    model: str
    input_shape: list[int]
    total_params: int
    trainable_params: int
    weights_available: bool
    layers: list[LayerOut]


class GridOut(BaseModel):
    image: str  # PNG data URL
    columns: int
    rows: int
    tile: int  # cell side in pixels
    gap: int
    order: list[int]  # channel (or input channel) shown in each cell, row by row

    @staticmethod
    def of(grid: Grid) -> GridOut:
        return GridOut(
            image=data_url(grid.image), columns=grid.columns, rows=grid.rows, tile=grid.tile, gap=grid.gap,
            order=grid.order,
        )


class ChannelStatsOut(BaseModel):
    channel: int
    mean: float
    std: float
    min: float
    max: float

    @staticmethod
    def of(s: ChannelStats) -> ChannelStatsOut:
        return ChannelStatsOut(channel=s.channel, mean=s.mean, std=s.std, min=s.min, max=s.max)


class FeaturesRequest(ImageRef):
    layer: str | None = Field(None, description="a module path; default: the last conv stage")
    sort: Literal["index", "activation"] = "index"
    top_k: int = Field(8, ge=1, le=4096)
    channel: int | None = Field(None, ge=0, description="also return this channel upsampled over the input")


class FeaturesOut(BaseModel):
    model: str
    layer: str
    shape: list[int]  # [C, H, W]
    input_size: int
    grid: GridOut
    stats: list[ChannelStatsOut]
    top: list[ChannelStatsOut]
    receptive_field: ReceptiveFieldOut | None
    channel: int | None
    channel_overlay: str | None  # PNG data URL
    cached: bool
    timings_ms: dict[str, float]


class HeadRequest(ImageRef):
    top_k: int = Field(5, ge=1, le=1000)


class HeadClassOut(BaseModel):
    index: int
    label: str
    logit: float
    probability: float


class ContributionOut(BaseModel):
    feature: int
    value: float
    weight: float
    product: float


class HeadOut(BaseModel):
    model: str
    layer: str
    in_features: int
    num_classes: int
    features: list[float]
    bias: float | None
    contributions: list[ContributionOut]
    classes: list[HeadClassOut]
    logsumexp: float


class FiltersOut(BaseModel):
    model: str
    layer: str
    shape: list[int]
    mode: Literal["rgb", "per_input_channel"]
    grid: GridOut
    filter: int
    values: list[list[list[float]]]
    bias: float | None
    conv_layers: list[str]


class ExplainRequest(ImageRef):
    method: Literal["gradcam", "gradcam++", "saliency", "occlusion"] = "gradcam"
    target: int | None = Field(None, ge=0, description="class index; default: the top-1 class")
    layer: str | None = Field(None, description="Grad-CAM layer; default: the last conv stage")
    smoothgrad_samples: int = Field(1, ge=1, le=32, description="saliency: >1 averages noisy copies")
    noise: float = Field(0.15, ge=0.0, le=1.0, description="SmoothGrad noise, a fraction of the input range")
    window: int = Field(56, ge=8, le=1024, description="occlusion square side in input pixels")
    stride: int = Field(28, ge=4, le=1024, description="occlusion step in input pixels")


class ExplanationOut(BaseModel):
    model: str
    method: str
    target: int
    label: str
    probability: float
    logit: float
    layer: str | None
    values: list[list[float]]
    heatmap: str  # PNG data URL
    overlay: str  # PNG data URL
    timings_ms: dict[str, float]


# --- routes ----------------------------------------------------------------------------------------------


@router.get("/models/{name}/architecture", response_model=ArchitectureOut)
def read_architecture(name: str, explorer: ExplorerDep) -> ArchitectureOut:
    """Every module in order with output shape, parameters, kernel settings and receptive field.

    Works without trained weights: the network is built with random weights to measure it.
    """
    arch = explorer.architecture(name)
    return ArchitectureOut(
        model=name,
        input_shape=arch.input_shape,
        total_params=arch.total_params,
        trainable_params=arch.trainable_params,
        weights_available=explorer.store.weights_status(name).available,
        layers=[LayerOut.of(info) for info in arch.layers],
    )


@router.get("/models/{name}/filters", response_model=FiltersOut, responses=CONFLICT)
def read_filters(
    name: str,
    explorer: ExplorerDep,
    layer: Annotated[str | None, Query(description="a conv layer; default: the first")] = None,
    filter: Annotated[int, Query(ge=0, description="the filter whose values to return")] = 0,
) -> FiltersOut:
    """A conv layer's learned kernels: RGB tiles for the first layer, per input channel deeper."""
    f = explorer.filters(name, layer, filter)
    return FiltersOut(
        model=f.model, layer=f.layer, shape=f.shape, mode=f.mode, grid=GridOut.of(f.grid),  # type: ignore[arg-type]
        filter=f.filter, values=f.values, bias=f.bias, conv_layers=f.conv_layers,
    )


@router.post("/features", response_model=FeaturesOut, responses=CONFLICT)
def create_features(
    body: FeaturesRequest, explorer: ExplorerDep, images: ImageStoreDep, settings: SettingsDep
) -> FeaturesOut:
    """Every channel of one layer's output for the image as a grid, with per-channel statistics."""
    stored = images.resolve(body.image_id, body.sample)
    f = explorer.features(
        stored, body.model or settings.default_model, body.layer, body.sort, body.top_k, body.channel
    )
    return FeaturesOut(
        model=f.model,
        layer=f.layer,
        shape=f.shape,
        input_size=f.input_size,
        grid=GridOut.of(f.grid),
        stats=[ChannelStatsOut.of(s) for s in f.stats],
        top=[ChannelStatsOut.of(s) for s in f.top],
        receptive_field=ReceptiveFieldOut.of(f.receptive_field),
        channel=f.channel,
        channel_overlay=data_url(f.channel_overlay) if f.channel_overlay is not None else None,
        cached=f.cached,
        timings_ms=f.timings_ms,
    )


@router.post("/head", response_model=HeadOut, responses=CONFLICT)
def create_head(
    body: HeadRequest, explorer: ExplorerDep, images: ImageStoreDep, settings: SettingsDep
) -> HeadOut:
    """Features -> the final fully connected layer -> logits -> softmax, for the top-k classes."""
    stored = images.resolve(body.image_id, body.sample)
    h = explorer.head(stored, body.model or settings.default_model, body.top_k)
    return HeadOut(
        model=h.model, layer=h.layer, in_features=h.in_features, num_classes=h.num_classes,
        features=h.features, bias=h.bias,
        contributions=[ContributionOut(**vars(c)) for c in h.contributions],
        classes=[HeadClassOut(**vars(c)) for c in h.classes], logsumexp=h.logsumexp,
    )


@router.post("/explain", response_model=ExplanationOut, responses=CONFLICT)
def create_explanation(
    body: ExplainRequest, explorer: ExplorerDep, images: ImageStoreDep, settings: SettingsDep
) -> ExplanationOut:
    """Why the model chose a class: a heatmap by Grad-CAM, Grad-CAM++, saliency/SmoothGrad or occlusion."""
    stored = images.resolve(body.image_id, body.sample)
    e = explorer.explain(
        stored, body.model or settings.default_model, body.method, body.target, body.layer,
        samples=body.smoothgrad_samples, noise=body.noise, window=body.window, stride=body.stride,
    )
    return ExplanationOut(
        model=e.model, method=e.method, target=e.target, label=e.label, probability=e.probability,
        logit=e.logit, layer=e.layer, values=e.values, heatmap=data_url(e.heatmap),
        overlay=data_url(e.overlay), timings_ms=e.timings_ms,
    )
