"""The convolution playground's engine: a pipeline of conv, activation and pool layers on an image tensor.

Everything is planned before anything is computed: :func:`plan` checks every layer against the shape it
receives (kernel larger than the padded input, reflect padding wider than the input, output over the
limit...) and gives each layer's output shape with the arithmetic behind it. :func:`run` then applies the
layers. Images are float tensors on the 0-255 scale in ``channels_last`` layout: an RGB photo decoded by
Pillow is already ``H x W x C`` in memory, and depthwise ``conv2d`` is an order of magnitude faster in that
layout on CPU than in the default one (see ``bench/playground.py``).

Convolution here is what CNNs compute, a cross-correlation: the kernel is not flipped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]
PaddingName = Literal["valid", "same", "full"]
ActivationName = Literal["relu", "leaky_relu", "sigmoid", "tanh", "abs"]
PoolMode = Literal["max", "avg", "global_avg", "global_max"]
RenderMode = Literal["clip", "minmax", "abs", "diverging"]

MAX_KERNEL = 31  # per axis
MAX_STRIDE = 16
MAX_DILATION = 8
MAX_FILTERS = 16  # filters in one bank
CHANNELS_LAST = torch.channels_last


class SpecError(ValueError):
    """A layer that cannot be applied; ``field`` names it (``layers[1].stride``), ``detail`` says why."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


# --- presets -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    name: str
    description: str  # one line, shown next to the preset on the page
    kernel: tuple[tuple[float, ...], ...]


def _preset(name: str, description: str, rows: Sequence[Sequence[float]], scale: float = 1.0) -> Preset:
    return Preset(name, description, tuple(tuple(v * scale for v in row) for row in rows))


_SOBEL = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
_PREWITT = [[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]]
_SCHARR = [[-3, 0, 3], [-10, 0, 10], [-3, 0, 3]]
_BINOMIAL5 = [1, 4, 6, 4, 1]


def _t(rows: list[list[int]]) -> list[list[int]]:
    return [list(col) for col in zip(*rows, strict=True)]


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        _preset("identity", "Leaves the image unchanged: a single 1 in the centre.",
                [[0, 0, 0], [0, 1, 0], [0, 0, 0]]),
        _preset("box_blur", "Averages each 3×3 neighbourhood: every weight is 1/9.", [[1] * 3] * 3, 1 / 9),
        _preset("gaussian_3", "Gentle blur weighting the centre most (1 2 1 binomial, sum 16).",
                [[1, 2, 1], [2, 4, 2], [1, 2, 1]], 1 / 16),
        _preset("gaussian_5", "Stronger smooth blur: 5×5 binomial approximation of a Gaussian (sum 256).",
                [[a * b for b in _BINOMIAL5] for a in _BINOMIAL5], 1 / 256),
        _preset("sharpen", "Boosts the centre against its four neighbours, making edges crisper.",
                [[0, -1, 0], [-1, 5, -1], [0, -1, 0]]),
        _preset("laplacian", "Second derivative: responds to edges in every direction, zero on flat areas.",
                [[0, 1, 0], [1, -4, 1], [0, 1, 0]]),
        _preset("sobel_x", "Horizontal gradient: finds vertical edges, with smoothing across rows.", _SOBEL),
        _preset("sobel_y", "Vertical gradient: finds horizontal edges, with smoothing across columns.",
                _t(_SOBEL)),
        _preset("prewitt_x", "Horizontal gradient with equal weights: finds vertical edges.", _PREWITT),
        _preset("prewitt_y", "Vertical gradient with equal weights: finds horizontal edges.", _t(_PREWITT)),
        _preset("scharr_x", "Horizontal gradient with better rotational symmetry than Sobel.", _SCHARR),
        _preset("scharr_y", "Vertical gradient with better rotational symmetry than Sobel.", _t(_SCHARR)),
        _preset("emboss", "Gives a relief look: light from the top left, shadow at the bottom right.",
                [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]),
        _preset("outline", "Strong edge detector: the centre against all eight neighbours (sum 0).",
                [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]]),
        _preset("motion_blur", "Smears along the diagonal, like a camera moving during the exposure.",
                [[1 if r == c else 0 for c in range(5)] for r in range(5)], 1 / 5),
    )
}


# --- layers --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Padding:
    top: int
    bottom: int
    left: int
    right: int

    @property
    def symmetric(self) -> bool:
        return self.top == self.bottom and self.left == self.right


@dataclass(frozen=True)
class ConvLayer:
    # (out, in, kh, kw) weight as torch wants it; for "per_channel" in == 1 and out is the image's channels.
    kernel: torch.Tensor  # (N, C, kh, kw) for "depth"/"bank", (kh, kw) for "per_channel"
    kind: Literal["per_channel", "depth", "bank"]
    stride: tuple[int, int] = (1, 1)
    padding: int | tuple[int, int] | PaddingName = 0
    padding_mode: PaddingMode = "zeros"
    dilation: tuple[int, int] = (1, 1)
    bias: tuple[float, ...] = (0.0,)  # one value for every output channel, or one per filter

    @property
    def kernel_size(self) -> tuple[int, int]:
        return int(self.kernel.shape[-2]), int(self.kernel.shape[-1])


@dataclass(frozen=True)
class ActivationLayer:
    fn: ActivationName
    negative_slope: float = 0.01  # leaky_relu only


@dataclass(frozen=True)
class PoolLayer:
    mode: PoolMode
    kernel_size: tuple[int, int] = (2, 2)
    stride: tuple[int, int] | None = None  # None: the kernel size
    padding: tuple[int, int] = (0, 0)
    ceil_mode: bool = False

    @property
    def resolved_stride(self) -> tuple[int, int]:
        return self.stride or self.kernel_size


Layer = ConvLayer | ActivationLayer | PoolLayer


def _nesting(value: object) -> int:
    depth = 0
    while isinstance(value, list | tuple):
        if not value:
            return depth + 1
        value, depth = value[0], depth + 1
    return depth


def kernel_tensor(values: object, field: str) -> torch.Tensor:
    """A kernel from nested lists: 2-D (kh, kw), 3-D (C, kh, kw) or 4-D (N, C, kh, kw), checked.

    Raises:
        SpecError: ragged or empty matrices, non-numeric or non-finite values, sides outside 1-31.
    """
    depth = _nesting(values)
    if depth not in (2, 3, 4):
        raise SpecError(field, "must be a 2-D matrix, a 3-D stack or a 4-D bank of numbers; "
                        f"got depth {depth}.")
    try:
        array = np.array(values, dtype=np.float64)
    except (ValueError, TypeError) as exc:
        if "inhomogeneous" in str(exc):
            raise SpecError(field, "is ragged: rows (and slices) must have the same length.") from None
        raise SpecError(field, "must be a rectangular array of numbers; it holds something else.") from None
    if array.ndim != depth:
        raise SpecError(field, "is ragged: every row (and every slice) must have the same length.")
    if array.size == 0:
        raise SpecError(field, f"is empty (shape {list(array.shape)}); each side must be 1-{MAX_KERNEL}.")
    if not np.isfinite(array).all():
        raise SpecError(field, "contains NaN or infinity; use finite numbers.")
    kh, kw = array.shape[-2:]
    if not (1 <= kh <= MAX_KERNEL and 1 <= kw <= MAX_KERNEL):
        raise SpecError(field, f"is {kh}×{kw}; each side must be 1-{MAX_KERNEL}.")
    if depth == 4 and not 1 <= array.shape[0] <= MAX_FILTERS:
        raise SpecError(field, f"has {array.shape[0]} filters; a bank holds 1-{MAX_FILTERS}.")
    if np.abs(array).max() > 1e6:
        raise SpecError(field, "has a value beyond ±1e6; use weights within ±1e6.")
    return torch.from_numpy(array).to(torch.float32)


def conv_layer(
    kernel: object,
    *,
    field: str = "kernel",
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] | str = 0,
    padding_mode: PaddingMode = "zeros",
    dilation: int | Sequence[int] = 1,
    bias: float | Sequence[float] = 0.0,
) -> ConvLayer:
    """Build a conv layer from a preset name or nested lists; the kernel's depth decides how it applies.

    A 2-D kernel is applied to each channel separately (depthwise), a 3-D kernel ``(C, kh, kw)`` is one
    filter as deep as the image whose slices are summed into one map, a 4-D kernel is a bank of such filters.
    """
    if isinstance(kernel, str):
        preset = PRESETS.get(kernel)
        if preset is None:
            raise SpecError(field.replace("kernel", "preset"),
                            f"unknown preset {kernel!r}; choose one of: {', '.join(PRESETS)}.")
        weight = torch.tensor(preset.kernel, dtype=torch.float32)
    else:
        weight = kernel_tensor(kernel, field)
    kind: Literal["per_channel", "depth", "bank"] = ("per_channel", "depth", "bank")[weight.dim() - 2]
    if kind == "depth":
        weight = weight.unsqueeze(0)  # (1, C, kh, kw)
    biases = (float(bias),) if isinstance(bias, int | float) else tuple(float(b) for b in bias)
    out_channels = weight.shape[0] if kind != "per_channel" else None
    if len(biases) != 1 and len(biases) != out_channels:
        raise SpecError(field.replace("kernel", "bias"),
                        f"has {len(biases)} values; give one number or one per filter ({out_channels or 1}).")
    if not all(math.isfinite(b) and abs(b) <= 1e6 for b in biases):
        raise SpecError(field.replace("kernel", "bias"), "must be finite numbers within ±1e6.")
    layer_padding: int | tuple[int, int] | PaddingName
    if isinstance(padding, str):
        if padding not in ("valid", "same", "full"):
            raise SpecError(field.replace("kernel", "padding"),
                            f"is {padding!r}; use a number, a pair, 'valid', 'same' or 'full'.")
        layer_padding = padding  # type: ignore[assignment]
    else:
        layer_padding = _pair(padding, field.replace("kernel", "padding"), 0, 64)
    return ConvLayer(
        kernel=weight,
        kind=kind,
        stride=_pair(stride, field.replace("kernel", "stride"), 1, MAX_STRIDE),
        padding=layer_padding,
        padding_mode=padding_mode,
        dilation=_pair(dilation, field.replace("kernel", "dilation"), 1, MAX_DILATION),
        bias=biases,
    )


def pair_of(value: int | Sequence[int]) -> tuple[int, int]:
    """``3`` -> ``(3, 3)``; a pair stays a pair."""
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _pair(value: int | Sequence[int], field: str, low: int, high: int) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and low <= v <= high for v in pair):
        raise SpecError(field, f"is {value!r}; use a whole number {low}-{high} or a pair of them.")
    return int(pair[0]), int(pair[1])


# --- planning: shapes and formulas -------------------------------------------------------------------


@dataclass(frozen=True)
class AxisSize:
    """One axis of a sliding window: ``o = floor((i + p_before + p_after - d(k-1) - 1)/s) + 1``."""

    size: int
    text: str  # the formula with the numbers filled in


def axis_size(
    i: int, k: int, s: int, p_before: int, p_after: int, d: int = 1, ceil_mode: bool = False
) -> AxisSize:
    """The output length of a sliding window along one axis, with the formula that gives it.

    ``ceil_mode`` follows torch's pooling rule: round up, but drop a last window that would start in
    the right padding.
    """
    span = i + p_before + p_after - d * (k - 1) - 1
    pad = f"2×{p_before}" if p_before == p_after else f"{p_before} + {p_after}"
    inner = f"({i} + {pad} − {d}×({k} − 1) − 1) / {s}"
    if span < 0:
        return AxisSize(0, f"({i} + {pad} − {d}×({k} − 1) − 1) < 0: the window does not fit")
    if not ceil_mode:
        o = span // s + 1
        return AxisSize(o, f"floor({inner}) + 1 = {o}")
    o = -(-span // s) + 1
    if (o - 1) * s >= i + p_before:  # the last window would start in the padding: torch drops it
        text = f"ceil({inner}) + 1 − 1 = {o - 1} (the last window would start in the padding)"
        return AxisSize(o - 1, text)
    return AxisSize(o, f"ceil({inner}) + 1 = {o}")


def resolve_padding(padding: int | tuple[int, int] | str, kernel_size: tuple[int, int],
                    dilation: tuple[int, int]) -> Padding:
    """Explicit (top, bottom, left, right) padding. 'same' keeps the size at stride 1 (ceil(i/s) otherwise);
    an even kernel gets the extra row and column at the bottom and right, as in TensorFlow and torch."""
    if isinstance(padding, int):
        return Padding(padding, padding, padding, padding)
    if isinstance(padding, tuple):
        return Padding(padding[0], padding[0], padding[1], padding[1])
    span_h, span_w = (d * (k - 1) for d, k in zip(dilation, kernel_size, strict=True))
    if padding == "valid":
        return Padding(0, 0, 0, 0)
    if padding == "full":
        return Padding(span_h, span_h, span_w, span_w)
    return Padding(span_h // 2, span_h - span_h // 2, span_w // 2, span_w - span_w // 2)


@dataclass(frozen=True)
class LayerPlan:
    shape: tuple[int, int, int]  # (C, H, W) of the output
    formula: str
    padding: Padding | None = None  # conv and pool only


def plan_layer(layer: Layer, shape: tuple[int, int, int], field: str) -> LayerPlan:
    """Check one layer against its input shape ``(C, H, W)`` and give its output shape and formula.

    Raises:
        SpecError: the layer cannot be applied to that shape.
    """
    c, h, w = shape
    if isinstance(layer, ActivationLayer):
        return LayerPlan(shape, f"{layer.fn} is element-wise: the size stays {c}×{h}×{w}")
    if isinstance(layer, PoolLayer) and layer.mode in ("global_avg", "global_max"):
        op = "average" if layer.mode == "global_avg" else "maximum"
        return LayerPlan((c, 1, 1), f"global {op} over each {h}×{w} map: {c}×1×1")
    if isinstance(layer, ConvLayer):
        kh, kw = layer.kernel_size
        (sh, sw), (dh, dw) = layer.stride, layer.dilation
        pad = resolve_padding(layer.padding, layer.kernel_size, layer.dilation)
        if layer.kind == "per_channel":
            out_c = c
        else:
            out_c = int(layer.kernel.shape[0])
            if layer.kernel.shape[1] != c:
                raise SpecError(f"{field}.kernel", f"is {layer.kernel.shape[1]} slices deep but its input "
                                f"has {c} channels; give one {kh}×{kw} slice per channel ({c}).")
        widest_h, widest_w = max(pad.top, pad.bottom), max(pad.left, pad.right)
        if layer.padding_mode == "reflect" and (widest_h >= h or widest_w >= w):
            raise SpecError(f"{field}.padding", f"reflect padding ({pad.top}, {pad.bottom}, {pad.left}, "
                            f"{pad.right}) must be smaller than the input ({h}×{w}); use replicate or less.")
        if layer.padding_mode == "circular" and (widest_h > h or widest_w > w):
            raise SpecError(f"{field}.padding", f"circular padding ({pad.top}, {pad.bottom}, {pad.left}, "
                            f"{pad.right}) must be at most the input size ({h}×{w}).")
        ceil_mode = False
        dil = (dh, dw)
    else:
        assert isinstance(layer, PoolLayer)
        kh, kw = layer.kernel_size
        (sh, sw), dil = layer.resolved_stride, (1, 1)
        ph, pw = layer.padding
        if ph > kh // 2 or pw > kw // 2:
            raise SpecError(f"{field}.padding", f"is ({ph}, {pw}); pooling padding must be at most half the "
                            f"kernel size ({kh // 2}, {kw // 2}).")
        pad, out_c, ceil_mode = Padding(ph, ph, pw, pw), c, layer.ceil_mode
    oh = axis_size(h, kh, sh, pad.top, pad.bottom, dil[0], ceil_mode)
    ow = axis_size(w, kw, sw, pad.left, pad.right, dil[1], ceil_mode)
    if oh.size < 1 or ow.size < 1:
        eh, ew = dil[0] * (kh - 1) + 1, dil[1] * (kw - 1) + 1
        raise SpecError(f"{field}.kernel_size" if isinstance(layer, PoolLayer) else f"{field}.kernel",
                        f"spans {eh}×{ew} (with dilation) but the padded input is only "
                        f"{h + pad.top + pad.bottom}×{w + pad.left + pad.right}; use a smaller kernel or "
                        "dilation, or more padding.")
    return LayerPlan((out_c, oh.size, ow.size), f"H: {oh.text}; W: {ow.text}", pad)


def multiply_adds(layer: Layer, in_shape: tuple[int, int, int], out_shape: tuple[int, int, int]) -> int:
    """Multiply-adds (or comparisons, for pooling) a layer costs: what bounds its running time."""
    c_out, h, w = out_shape
    if isinstance(layer, ConvLayer):
        kh, kw = layer.kernel_size
        depth = 1 if layer.kind == "per_channel" else in_shape[0]  # per channel: depthwise, groups = C
        return c_out * h * w * depth * kh * kw
    if isinstance(layer, PoolLayer):
        kh, kw = (in_shape[1], in_shape[2]) if layer.mode.startswith("global") else layer.kernel_size
        return c_out * h * w * kh * kw
    return c_out * h * w


def plan(layers: Sequence[Layer], shape: tuple[int, int, int], max_values: int,
         max_multiply_adds: int | None = None, prefix: str = "layers") -> list[LayerPlan]:
    """Plan every layer in order, refusing any output with more than ``max_values`` numbers (C×H×W) and a
    pipeline costing more than ``max_multiply_adds`` in all (so no request can run for minutes)."""
    plans, total = [], 0
    for index, layer in enumerate(layers):
        field = f"{prefix}[{index}]"
        step = plan_layer(layer, shape, field)
        c, h, w = step.shape
        if c * h * w > max_values:
            raise SpecError(field, f"would output {c}×{h}×{w} = {c * h * w:,} values; the limit is "
                            f"{max_values:,}. Use a smaller image (max_side), more stride or fewer filters.")
        total += multiply_adds(layer, shape, step.shape)
        if max_multiply_adds is not None and total > max_multiply_adds:
            raise SpecError(field, f"brings the pipeline to {total:,} multiply-adds; the limit is "
                            f"{max_multiply_adds:,}. Use a smaller image (max_side), smaller kernels, fewer "
                            "filters or fewer layers.")
        plans.append(step)
        shape = step.shape
    return plans


# --- computing -----------------------------------------------------------------------------------------


def image_tensor(rgb: np.ndarray, grayscale: bool = False) -> torch.Tensor:
    """A ``(1, C, H, W)`` float32 tensor on the 0-255 scale from an ``(H, W, 3)`` uint8 array, channels_last.

    Pillow's HWC memory is already the channels_last order, but a permuted view of it has a batch stride of
    3, which oneDNN does not take for channels_last: its depthwise conv then runs ~25× slower (measured on a
    512² photo, 28 ms against 1 ms). So the uint8 pixels are converted once into a properly strided tensor.
    """
    h, w, _ = rgb.shape
    pixels = torch.from_numpy(np.require(rgb, requirements="W")).permute(2, 0, 1).unsqueeze(0)  # a view
    x = torch.empty((1, 3, h, w), dtype=torch.float32, memory_format=CHANNELS_LAST)
    x.copy_(pixels)  # (1, 3, H, W), strides (3HW, 1, 3W, 3)
    if grayscale:  # ITU-R 601 luma, as Pillow's convert("L")
        luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        x = (x * luma).sum(1, keepdim=True)  # (1, 1, H, W)
    return x


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in a channels_last layout oneDNN recognises: a size-1 batch must still have the full stride."""
    if x.is_contiguous(memory_format=CHANNELS_LAST) and x.stride(0) == x[0].numel():
        return x
    return x.clone(memory_format=CHANNELS_LAST)  # clone lays out every stride, the batch one included


def apply_layer(x: torch.Tensor, layer: Layer, step: LayerPlan) -> torch.Tensor:
    """One planned layer on ``x`` ``(B, C, H, W)``; keeps the channels_last layout."""
    if isinstance(layer, ActivationLayer):
        if layer.fn == "relu":
            return F.relu(x)
        if layer.fn == "leaky_relu":
            return F.leaky_relu(x, layer.negative_slope)
        if layer.fn == "sigmoid":
            return torch.sigmoid(x)
        if layer.fn == "tanh":
            return torch.tanh(x)
        return x.abs()
    if isinstance(layer, PoolLayer):
        if layer.mode == "global_avg":
            return x.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
        if layer.mode == "global_max":
            return x.amax((2, 3), keepdim=True)  # (B, C, 1, 1)
        if layer.mode == "max":  # padding is -inf for max: never chosen
            return F.max_pool2d(x, layer.kernel_size, layer.resolved_stride, layer.padding,
                                ceil_mode=layer.ceil_mode)
        # padding is not counted in the average either, so both modes ignore it the same way
        return F.avg_pool2d(x, layer.kernel_size, layer.resolved_stride, layer.padding,
                            ceil_mode=layer.ceil_mode, count_include_pad=False)
    pad = step.padding
    assert pad is not None
    channels = x.shape[1]
    if layer.kind == "per_channel":
        weight = layer.kernel.expand(channels, 1, *layer.kernel_size).contiguous()  # (C, 1, kh, kw)
        groups = channels
    else:
        weight, groups = layer.kernel, 1  # (N, C, kh, kw)
    out_c = weight.shape[0]
    bias = None if not any(layer.bias) else torch.tensor(  # (N,); None skips the add
        layer.bias * (out_c if len(layer.bias) == 1 else 1), dtype=x.dtype)
    weight = weight.to(x.dtype)
    if layer.padding_mode == "zeros" and pad.symmetric:
        padding: tuple[int, int] = (pad.top, pad.left)  # conv2d pads for free
    else:
        mode = "constant" if layer.padding_mode == "zeros" else layer.padding_mode
        x = F.pad(x, (pad.left, pad.right, pad.top, pad.bottom), mode=mode)
        padding = (0, 0)
    return F.conv2d(x, weight, bias, layer.stride, padding, layer.dilation, groups)


def run(x: torch.Tensor, layers: Sequence[Layer], plans: Sequence[LayerPlan]) -> list[torch.Tensor]:
    """Apply planned layers in turn; returns every layer's output ``(1, C, H, W)``."""
    outputs = []
    with torch.inference_mode():
        for layer, step in zip(layers, plans, strict=True):
            x = apply_layer(channels_last(x), layer, step)  # a no-op check unless a layer changed the layout
            outputs.append(x)
    return outputs


# --- rendering -----------------------------------------------------------------------------------------

# Diverging colour map (ColorBrewer RdBu ends): negative blue, zero near white, positive red, as a 256-entry
# lookup table: indexing it is ~20× faster than blending colours per pixel with torch.where (measured, 1024²).
_NEGATIVE = torch.tensor([33.0, 102.0, 172.0])
_ZERO = torch.tensor([247.0, 247.0, 247.0])
_POSITIVE = torch.tensor([178.0, 24.0, 43.0])
_RAMP = torch.linspace(-1, 1, 255).unsqueeze(1)  # (255, 1): an odd count puts 0 exactly on the middle entry
DIVERGING_LUT = torch.where(_RAMP < 0, _ZERO + (_ZERO - _NEGATIVE) * _RAMP,
                            _ZERO + (_POSITIVE - _ZERO) * _RAMP).round().to(torch.uint8)  # (255, 3)


def _diverging(maps: torch.Tensor) -> torch.Tensor:
    """``(C, H, W)`` signed maps -> ``(C, H, W, 3)`` uint8 colours, scaled by the largest absolute value."""
    scale = float(maps.abs().amax().clamp_min(1e-12))
    index = (maps * (127.0 / scale) + 127.0).round_().to(torch.long)  # (C, H, W) in 0..254
    return DIVERGING_LUT[index]


def tile(maps: torch.Tensor, gap: int = 2) -> torch.Tensor:
    """Lay out ``(C, H, W, ...)`` maps on a near-square grid with a ``gap``-pixel white border between."""
    c, h, w = maps.shape[:3]
    cols = math.ceil(math.sqrt(c))
    rows = math.ceil(c / cols)
    canvas = torch.full((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, *maps.shape[3:]), 255,
                        dtype=maps.dtype)
    for index in range(c):
        r, col = divmod(index, cols)
        canvas[r * (h + gap): r * (h + gap) + h, col * (w + gap): col * (w + gap) + w] = maps[index]
    return canvas


def render(y: torch.Tensor, mode: RenderMode) -> np.ndarray:
    """A displayable uint8 picture of one output ``(1, C, H, W)``.

    3 channels become an RGB photo, 1 a grey (or coloured, for ``diverging``) picture, any other count
    (and ``diverging`` on 3 channels) a grid of one tile per channel. Modes for signed values: ``clip`` to
    0-255, ``minmax`` stretch of the whole output to 0-255, ``abs`` then clip, ``diverging`` blue-white-red.

    Returns:
        ``(H, W)`` grey or ``(H, W, 3)`` RGB uint8 array.
    """
    with torch.inference_mode():
        maps = y[0]  # (C, H, W)
        if mode == "diverging":
            colours = _diverging(maps.float())  # (C, H, W, 3)
            return (colours[0] if maps.shape[0] == 1 else tile(colours)).contiguous().numpy()
        if mode == "minmax":
            low, high = maps.amin(), maps.amax()
            maps = (maps - low) * (255.0 / float(high - low)) if high > low else torch.zeros_like(maps)
        elif mode == "abs":
            maps = maps.abs()
        grey = maps.clamp(0, 255).round_().to(torch.uint8)  # (C, H, W), channels_last strides kept
        if grey.shape[0] == 3:
            return grey.permute(1, 2, 0).contiguous().numpy()  # (H, W, 3): a view-copy of the HWC memory
        if grey.shape[0] == 1:
            return grey[0].contiguous().numpy()
        return tile(grey).numpy()


def stats(y: torch.Tensor) -> dict[str, float]:
    """min, max, mean and (population) std of all values of ``y``."""
    with torch.inference_mode():
        # every value once, in memory order: aminmax over the channels_last tensor as NCHW is ~5× slower
        flat = y.permute(0, 2, 3, 1).reshape(-1) if y.is_contiguous(memory_format=CHANNELS_LAST) else y.reshape(-1)
        low, high = torch.aminmax(flat)
        mean = flat.mean()
        # a norm of the centred values: ~10× faster than torch.std_mean here, and no cancellation
        std = torch.linalg.vector_norm(flat - mean) / math.sqrt(flat.numel())
        return {"min": float(low), "max": float(high), "mean": float(mean), "std": float(std)}
