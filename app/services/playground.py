"""The convolution playground as a service: an image and a pipeline in, every layer's picture and numbers out.

Rendered pictures are data URLs. The format is picked from measurements (``bench/playground.py``): PNG at
compress level 1 costs ~60 ms for a 1024² RGB picture against ~3 ms for JPEG quality 90 (and 7× the bytes),
so ``auto`` sends small pictures (up to :data:`PNG_MAX_PIXELS`, where every pixel matters and PNG is cheap)
as PNG and larger ones as JPEG.
"""

from __future__ import annotations

import base64
import io
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from app.cnn import conv
from app.cnn.conv_steps import StepsResult, explain
from app.core.config import Settings
from app.core.errors import InvalidParameter
from app.core.images import encode_png

RenderFormat = Literal["auto", "png", "jpeg", "webp"]
PNG_MAX_PIXELS = 256 * 256
VALUES_MAX_SIDE = 64  # raw values are returned for outputs at most 64×64
JPEG_QUALITY = 90
MEDIA = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


@contextmanager
def spec_errors() -> Iterator[None]:
    """Turn the engine's :class:`SpecError` into a 422 naming the field."""
    try:
        yield
    except conv.SpecError as exc:
        raise InvalidParameter(f"{exc.field}: {exc.detail}",
                               errors=[{"field": exc.field, "message": exc.detail}]) from exc


@dataclass(frozen=True)
class LayerOutput:
    output_shape: tuple[int, int, int]  # (C, H, W)
    formula: str
    stats: dict[str, float]
    image: str  # data URL
    image_size: tuple[int, int]  # (width, height) of the picture, after any downscaling
    values: list[list[list[float]]] | None  # (C, H, W) when H and W are at most 64


@dataclass(frozen=True)
class Convolution:
    input_shape: tuple[int, int, int]  # (C, H, W) after scaling and grayscale
    layers: list[LayerOutput]
    timings_ms: dict[str, float]


def encode(picture: np.ndarray, fmt: RenderFormat, max_pixels: int) -> tuple[str, tuple[int, int]]:
    """A data URL of a uint8 ``(H, W)`` or ``(H, W, 3)`` picture, scaled down to ``max_pixels`` if larger."""
    image = Image.fromarray(picture)
    if image.width * image.height > max_pixels:
        scale = math.sqrt(max_pixels / (image.width * image.height))
        size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
        image = image.resize(size, Image.Resampling.BOX)
    if fmt == "auto":
        fmt = "png" if image.width * image.height <= PNG_MAX_PIXELS else "jpeg"
    if fmt == "png":
        raw = encode_png(image)  # compress level 1, chosen by measurement like the other formats
    else:
        buffer = io.BytesIO()
        if fmt == "jpeg":
            image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        else:
            image.save(buffer, format="WEBP", quality=80, method=0)
        raw = buffer.getvalue()
    data = base64.b64encode(raw).decode("ascii")
    return f"data:{MEDIA[fmt]};base64,{data}", image.size


def scaled(image: Image.Image, max_side: int) -> Image.Image:
    """The image with its longest side at most ``max_side`` (never enlarged)."""
    longest = max(image.size)
    if longest <= max_side:
        return image
    scale = max_side / longest
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def convolve_image(
    image: Image.Image,
    layers: Sequence[conv.Layer],
    settings: Settings,
    *,
    grayscale: bool = False,
    max_side: int = 1024,
    mode: conv.RenderMode = "clip",
    fmt: RenderFormat = "auto",
    slot: AbstractContextManager[object] | None = None,
) -> Convolution:
    """Run a planned pipeline on an RGB image and render every layer's output.

    ``slot`` is held while the layers compute: the model store's inference slot, so that convolutions and
    forward passes take turns on the cores instead of oversubscribing them.
    """
    if len(layers) > settings.convolve_max_layers:
        limit = settings.convolve_max_layers
        raise InvalidParameter(f"layers: {len(layers)} layers; the limit is {limit}.",
                               errors=[{"field": "layers", "message": f"at most {limit} layers"}])
    if not 16 <= max_side <= settings.convolve_max_side:
        raise InvalidParameter(f"max_side: {max_side} is outside 16-{settings.convolve_max_side}.",
                               errors=[{"field": "max_side", "message": f"16-{settings.convolve_max_side}"}])
    start = time.perf_counter()
    image = scaled(image, max_side)
    x = conv.image_tensor(np.asarray(image), grayscale)  # (1, C, H, W)
    shape = (int(x.shape[1]), int(x.shape[2]), int(x.shape[3]))
    with spec_errors():
        plans = conv.plan(layers, shape, settings.convolve_max_values, settings.convolve_max_multiply_adds)
    planned = time.perf_counter()
    with slot or nullcontext():
        prepared = time.perf_counter()
        outputs = conv.run(x, layers, plans)
        computed = time.perf_counter()
    results, render_s, encode_s = [], 0.0, 0.0
    for index, (y, step) in enumerate(zip(outputs, plans, strict=True)):
        began = time.perf_counter()
        numbers = conv.stats(y)
        if not all(math.isfinite(v) for v in numbers.values()):
            raise InvalidParameter(
                f"layers[{index}]: the output overflowed float32 (it holds infinity or NaN); use smaller "
                "weights or bias.", errors=[{"field": f"layers[{index}]", "message": "output is not finite"}])
        picture = conv.render(y, mode)
        rendered = time.perf_counter()
        url, size = encode(picture, fmt, settings.convolve_max_render_pixels)
        encode_s += time.perf_counter() - rendered
        render_s += rendered - began
        c, h, w = step.shape
        values = y[0].tolist() if h <= VALUES_MAX_SIDE and w <= VALUES_MAX_SIDE else None
        results.append(LayerOutput(step.shape, step.formula, numbers, url, size, values))
    timings = {
        "prepare": (planned - start) * 1000,
        "queue": (prepared - planned) * 1000,  # waiting for the inference slot
        "compute": (computed - prepared) * 1000,
        "render": render_s * 1000,
        "encode": encode_s * 1000,
        "total": (time.perf_counter() - start) * 1000,
    }
    return Convolution(shape, results, {k: round(v, 2) for k, v in timings.items()})


def explain_steps(values: list[list[float]], layer: conv.Layer) -> StepsResult:
    """The step-by-step arithmetic of one layer on a small matrix (422 on a bad matrix or layer)."""
    with spec_errors():
        return explain(values, layer, "layer")
