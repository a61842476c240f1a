"""Looking inside a model: architecture, feature maps, filters, the head and explanations, for any zoo model.

One forward pass per (image, model) records every layer; the recordings stay in a least-recently-used cache
bounded by ``Settings.explore_cache_bytes``, so switching layers on the same image costs no forward pass.
Architectures need no weights: they come from a private ``spec.build()`` and are kept per model spec.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch import nn

from app.cnn import explain as explain_ops
from app.cnn.features import (
    ChannelStats,
    Grid,
    Recorded,
    channel_stats,
    colormap,
    default_target_layer,
    normalise_channels,
    overlay,
    record_layers,
    tile_grid,
    upsample,
)
from app.cnn.inspect import Architecture, LayerInfo, ReceptiveField, describe
from app.cnn.models import ModelSpec
from app.core.config import Settings
from app.core.errors import InvalidParameter
from app.services.image_store import StoredImage
from app.services.lru import evict_lru
from app.services.model_store import LoadedModel, ModelStore

MAX_VALUES_SIDE = 56  # heatmap values returned as JSON are pooled down to at most this many per side
MAX_OCCLUSION_WINDOWS = 400


def _listing(names: list[str], limit: int = 30) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


@dataclass
class _Entry:
    module: nn.Module  # the loaded module the recording came from (a re-registered model gets a new one)
    recorded: Recorded


@dataclass(frozen=True)
class FeatureMaps:
    model: str
    layer: str
    shape: list[int]  # (C, H, W)
    grid: Grid
    stats: list[ChannelStats]
    top: list[ChannelStats]  # the most active channels by mean activation
    receptive_field: ReceptiveField | None
    input_size: int
    channel: int | None = None
    channel_overlay: Image.Image | None = None
    cached: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class HeadClass:
    index: int
    label: str
    logit: float
    probability: float


@dataclass(frozen=True)
class Contribution:
    feature: int
    value: float  # the feature's activation
    weight: float  # the classifier's weight from this feature to the top class
    product: float


@dataclass(frozen=True)
class Head:
    model: str
    layer: str  # the final fully connected layer
    in_features: int
    num_classes: int
    features: list[float]  # the vector fed to it (pooled features for most CNNs)
    bias: float | None  # of the top class
    contributions: list[Contribution]  # the features that add most to the top class's logit
    classes: list[HeadClass]
    logsumexp: float  # softmax(z)_i = exp(z_i - logsumexp)


@dataclass(frozen=True)
class Filters:
    model: str
    layer: str
    shape: list[int]  # (out_channels, in_channels / groups, kh, kw)
    mode: str  # "rgb": every filter in colour; "per_input_channel": one filter, a tile per input channel
    grid: Grid
    filter: int
    values: list[list[list[float]]]  # the chosen filter, (in_channels / groups, kh, kw)
    bias: float | None
    conv_layers: list[str]


@dataclass(frozen=True)
class ExplainResult:
    model: str
    method: str
    target: int
    label: str
    probability: float
    logit: float
    layer: str | None
    values: list[list[float]]  # heat in [0, 1], at most MAX_VALUES_SIDE per side
    heatmap: Image.Image  # coloured heat at the input size
    overlay: Image.Image  # the same over the model's input picture
    timings_ms: dict[str, float] = field(default_factory=dict)


class Explorer:
    def __init__(self, settings: Settings, store: ModelStore) -> None:
        self.settings = settings
        self.store = store
        self._cache: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._architectures: dict[str, tuple[ModelSpec, Architecture]] = {}
        self._lock = threading.Lock()

    # --- architecture ------------------------------------------------------------------------------------
    def architecture(self, model: str) -> Architecture:
        """Layers, shapes, parameter counts and receptive fields; weights are not needed."""
        spec = self.store.spec(model)
        with self._lock:
            known = self._architectures.get(model)
        if known is not None and known[0] is spec:
            return known[1]
        arch = describe(spec.build().eval(), spec.preprocessing.crop_size)
        with self._lock:
            self._architectures[model] = (spec, arch)
        return arch

    def _layer_info(self, model: str, layer: str) -> LayerInfo | None:
        return next((info for info in self.architecture(model).layers if info.path == layer), None)

    # --- the cached forward pass -------------------------------------------------------------------------
    @property
    def cache_bytes(self) -> int:
        with self._lock:
            return sum(e.recorded.nbytes for e in self._cache.values())

    def cache_keys(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._cache)

    def _input(self, loaded: LoadedModel, image: Image.Image) -> torch.Tensor:
        x = loaded.spec.preprocessing.to_tensor(image)[None].to(loaded.device)  # (1, 3, H, W)
        return x.contiguous(memory_format=torch.channels_last)

    def record(self, stored: StoredImage, model: str) -> tuple[LoadedModel, Recorded, bool]:
        """Every layer's output for the image: from the cache, or from one forward pass then cached."""
        loaded = self.store.get(model)
        key = (stored.image_id, model)
        with self._lock:
            entry = self._cache.get(key)
            if entry is not None and entry.module is loaded.module:
                self._cache.move_to_end(key)
                return loaded, entry.recorded, True
        x = self._input(loaded, stored.image)
        with self.store.inference_slot():
            recorded = record_layers(loaded.module, x)
        limit = self.settings.explore_cache_bytes
        with self._lock:
            self._cache.pop(key, None)
            if recorded.nbytes <= limit:
                self._cache[key] = _Entry(loaded.module, recorded)
                evict_lru(self._cache, lambda e: e.recorded.nbytes, limit)
        return loaded, recorded, False

    def _spatial_layer(self, recorded: Recorded, layer: str, model: str, what: str) -> str:
        if layer not in recorded.shapes:
            valid = list(recorded.shapes)
            raise InvalidParameter(
                f"unknown layer {layer!r} for {model}; valid layers: {_listing(valid)}.",
                valid_layers=valid,
            )
        if layer not in recorded.outputs:
            spatial = recorded.spatial_layers()
            raise InvalidParameter(
                f"layer {layer!r} of {model} has output shape {recorded.shapes[layer]} with no (C, H, W) "
                f"spatial maps, so it has no {what}; choose a layer with spatial output: "
                f"{_listing(spatial)}.",
                valid_layers=spatial,
            )
        return layer

    # --- feature maps ------------------------------------------------------------------------------------
    def features(
        self,
        stored: StoredImage,
        model: str,
        layer: str | None,
        sort: str = "index",
        top_k: int = 8,
        channel: int | None = None,
    ) -> FeatureMaps:
        """Every channel of one layer's output as a grid, with per-channel statistics and the top k."""
        start = time.perf_counter()
        loaded, recorded, cached = self.record(stored, model)
        recorded_at = time.perf_counter()
        if layer is None:
            layer = default_target_layer(recorded.order, recorded.shapes, loaded.module) or ""
        layer = self._spatial_layer(recorded, layer, model, "feature maps")
        maps = recorded.outputs[layer]  # (C, H, W) float16
        channels = maps.shape[0]
        if channel is not None and not 0 <= channel < channels:
            raise InvalidParameter(
                f"channel must be in 0..{channels - 1} for layer {layer!r}, got {channel}."
            )
        stats = channel_stats(maps)
        by_activation = sorted(stats, key=lambda s: s.mean, reverse=True)
        order = [s.channel for s in by_activation] if sort == "activation" else list(range(channels))
        grid = tile_grid(normalise_channels(maps).numpy(), order)
        channel_image = None
        crop = loaded.spec.preprocessing.crop_size
        if channel is not None:
            heat = upsample(normalise_channels(maps[channel : channel + 1])[0], crop).numpy()
            channel_image = overlay(loaded.spec.preprocessing.view(stored.image), heat, alpha=0.6)
        info = self._layer_info(model, layer)
        done = time.perf_counter()
        return FeatureMaps(
            model=model,
            layer=layer,
            shape=list(maps.shape),
            grid=grid,
            stats=stats,
            top=by_activation[: min(top_k, channels)],
            receptive_field=info.receptive_field if info else None,
            input_size=crop,
            channel=channel,
            channel_overlay=channel_image,
            cached=cached,
            timings_ms={
                "forward": 0.0 if cached else round((recorded_at - start) * 1000, 2),
                "render": round((done - recorded_at) * 1000, 2),
                "total": round((done - start) * 1000, 2),
            },
        )

    # --- the head ----------------------------------------------------------------------------------------
    def head(self, stored: StoredImage, model: str, top_k: int = 5) -> Head:
        """Features -> the final fully connected layer's logits -> softmax, for the top-k classes."""
        loaded, recorded, _ = self.record(stored, model)
        if recorded.head_layer is None or recorded.logits is None or recorded.head_input is None:
            raise InvalidParameter(f"{model} has no fully connected (nn.Linear) layer to show as its head.")
        logits = recorded.logits  # (num_classes,)
        probabilities = logits.softmax(0)
        k = max(1, min(top_k, logits.numel()))
        values, indices = probabilities.topk(k)
        categories = loaded.spec.categories
        classes = [
            HeadClass(int(i), categories[int(i)] if int(i) < len(categories) else str(int(i)),
                      float(logits[int(i)]), float(p))
            for p, i in zip(values, indices, strict=True)
        ]
        linear = dict(loaded.module.named_modules())[recorded.head_layer]
        assert isinstance(linear, nn.Linear)
        top = classes[0].index
        weight = linear.weight.detach()[top].float().cpu()  # (in_features,)
        products = weight * recorded.head_input
        best = products.topk(min(8, products.numel())).indices
        bias = float(linear.bias.detach()[top]) if linear.bias is not None else None
        return Head(
            model=model,
            layer=recorded.head_layer,
            in_features=int(recorded.head_input.numel()),
            num_classes=int(logits.numel()),
            features=[round(float(v), 5) for v in recorded.head_input],
            bias=bias,
            contributions=[
                Contribution(int(j), float(recorded.head_input[j]), float(weight[j]), float(products[j]))
                for j in best
            ],
            classes=classes,
            logsumexp=float(logits.logsumexp(0)),
        )

    # --- filters -----------------------------------------------------------------------------------------
    def filters(self, model: str, layer: str | None, filter_index: int = 0) -> Filters:
        """A conv layer's kernels: all as RGB for a 3-channel input, else one filter per input channel."""
        loaded = self.store.get(model)
        convs = {p: m for p, m in loaded.module.named_modules() if isinstance(m, nn.Conv2d)}
        names = list(convs)
        if not names:
            raise InvalidParameter(f"{model} has no nn.Conv2d layer.")
        layer = layer or names[0]
        if layer not in convs:
            raise InvalidParameter(
                f"layer {layer!r} of {model} is not a convolution; choose one of: {_listing(names)}.",
                valid_layers=names,
            )
        weight = convs[layer].weight.detach().float().cpu()  # (out, in / groups, kh, kw)
        out_channels = weight.shape[0]
        if not 0 <= filter_index < out_channels:
            raise InvalidParameter(
                f"filter must be in 0..{out_channels - 1} for layer {layer!r}, got {filter_index}."
            )
        if weight.shape[1] == 3:
            flat = weight.flatten(1)
            low, high = flat.min(1).values, flat.max(1).values  # per filter, so each uses the full range
            scaled = (weight - low[:, None, None, None]) / (high - low).clamp_min(1e-12)[:, None, None, None]
            tiles = scaled.permute(0, 2, 3, 1).numpy()  # (out, kh, kw, 3)
            grid, mode = tile_grid(tiles, list(range(out_channels))), "rgb"
        else:
            chosen = weight[filter_index]  # (in / groups, kh, kw)
            peak = float(chosen.abs().max()) or 1.0
            tiles = ((chosen / peak + 1) / 2).numpy()  # zero is mid-grey, shared scale within the filter
            grid, mode = tile_grid(tiles, list(range(chosen.shape[0]))), "per_input_channel"
        bias = convs[layer].bias
        return Filters(
            model=model,
            layer=layer,
            shape=list(weight.shape),
            mode=mode,
            grid=grid,
            filter=filter_index,
            values=weight[filter_index].tolist(),
            bias=float(bias.detach()[filter_index]) if bias is not None else None,
            conv_layers=names,
        )

    # --- explanations ------------------------------------------------------------------------------------
    def explain(
        self,
        stored: StoredImage,
        model: str,
        method: str,
        target: int | None = None,
        layer: str | None = None,
        samples: int = 1,
        noise: float = 0.15,
        window: int = 56,
        stride: int = 28,
    ) -> ExplainResult:
        """Grad-CAM, Grad-CAM++, saliency (SmoothGrad with ``samples`` > 1) or occlusion for one class."""
        start = time.perf_counter()
        loaded, recorded, _ = self.record(stored, model)
        spec = loaded.spec
        num_classes = spec.num_classes
        logits = recorded.logits
        if target is None:
            if logits is None:
                raise InvalidParameter(f"{model} has no classifier output to pick a top-1 from; give target.")
            target = int(logits.argmax())
        if not 0 <= target < num_classes:
            raise InvalidParameter(
                f"target must be a class index in 0..{num_classes - 1} for {model}, got {target}."
            )
        crop = spec.preprocessing.crop_size
        x = self._input(loaded, stored.image)
        used_layer: str | None = None
        try:
            if method in ("gradcam", "gradcam++"):
                if layer is None:
                    layer = default_target_layer(recorded.order, recorded.shapes, loaded.module) or ""
                used_layer = self._spatial_layer(recorded, layer, model, "class activation map")
                module = dict(loaded.module.named_modules())[used_layer]
                with self.store.inference_slot():
                    plus = method == "gradcam++"
                    result = explain_ops.grad_cam(loaded.module, module, x, target, plus=plus)
            elif method == "saliency":
                with self.store.inference_slot():
                    result = explain_ops.saliency(loaded.module, x, target, samples=samples, noise=noise)
            elif method == "occlusion":
                if window > crop:
                    raise InvalidParameter(f"window must be at most the input size {crop}, got {window}.")
                count = len(explain_ops.occlusion_positions(crop, window, stride)) ** 2
                if count > MAX_OCCLUSION_WINDOWS:
                    raise InvalidParameter(
                        f"window {window} with stride {stride} needs {count} forward passes; the limit is "
                        f"{MAX_OCCLUSION_WINDOWS}: use a larger stride or window."
                    )
                with self.store.inference_slot():
                    result = explain_ops.occlusion(loaded.module, x, target, window=window, stride=stride)
            else:
                methods = ", ".join(explain_ops.METHODS)
                raise InvalidParameter(f"method must be one of {methods}, got {method!r}.")
        except ValueError as exc:
            if isinstance(exc, InvalidParameter):
                raise
            raise InvalidParameter(str(exc)) from exc
        heat = result.heat  # (h, w) in [0, 1]
        if max(heat.shape) > MAX_VALUES_SIDE:
            side = (min(heat.shape[0], MAX_VALUES_SIDE), min(heat.shape[1], MAX_VALUES_SIDE))
            pooled = torch.nn.functional.adaptive_avg_pool2d(heat[None, None], side)[0, 0]
            values = pooled / pooled.max().clamp_min(1e-12)
        else:
            values = heat
        full = upsample(heat, crop).clamp(0, 1).numpy()  # (crop, crop)
        view = spec.preprocessing.view(stored.image)
        categories = spec.categories
        return ExplainResult(
            model=model,
            method=result.method,
            target=target,
            label=categories[target] if target < len(categories) else str(target),
            probability=result.probability,
            logit=result.logit,
            layer=used_layer,
            values=np.round(values.numpy().astype(np.float64), 4).tolist(),
            heatmap=Image.fromarray(colormap(full), "RGB"),
            overlay=overlay(view, full),
            timings_ms={"total": round((time.perf_counter() - start) * 1000, 2)},
        )
