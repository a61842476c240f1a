"""Feature maps: one forward pass records every layer's output; channels become one tiled grid image.

Hooks live in a :class:`LayerRecorder`, a context manager that owns their handles and removes them on the
way out, errors included. The recorder ignores calls from other threads, so a model shared between request
threads never hands one request's activations to another.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

POOLING = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d)


@dataclass
class Recorded:
    """What one forward pass left behind, on the CPU."""

    outputs: dict[str, torch.Tensor]  # path -> (C, H, W) float16 for every module with a spatial output
    shapes: dict[str, list[int]]  # path -> output shape without batch, for every module that ran
    order: list[str]  # paths in the order their forward finished
    head_layer: str | None = None  # the last nn.Linear that ran
    head_input: torch.Tensor | None = None  # (in_features,) float32
    logits: torch.Tensor | None = None  # (num_classes,) float32
    nbytes: int = 0

    def spatial_layers(self) -> list[str]:
        return [p for p in self.order if p in self.outputs]


class LayerRecorder:
    """Forward hooks on every named module of ``model`` that copy outputs (and the last Linear's input).

    Use as ``with LayerRecorder(model) as rec: model(x)``; every hook is removed on exit.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        self.thread = threading.get_ident()
        self.outputs: dict[str, torch.Tensor] = {}
        self.shapes: dict[str, list[int]] = {}
        self.order: list[str] = []
        self.linear: tuple[str, torch.Tensor, torch.Tensor] | None = None
        self._stored: list[torch.Tensor] = []
        self._last: torch.Tensor | None = None
        self._last_key: tuple[Any, ...] | None = None
        self._last_source: torch.Tensor | None = None

    def __enter__(self) -> LayerRecorder:
        try:
            for path, module in self.model.named_modules():
                if path:
                    self.handles.append(module.register_forward_hook(self._hook(path)))
        except BaseException:
            self.release()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def release(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def _hook(self, path: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if threading.get_ident() != self.thread or path in self.shapes:
                return
            if not isinstance(output, torch.Tensor):
                return
            self.shapes[path] = list(output.shape[1:])
            self.order.append(path)
            if isinstance(module, nn.Linear) and args and isinstance(args[0], torch.Tensor):
                self.linear = (path, args[0][0].detach().float().cpu(), output[0].detach().float().cpu())
            if output.dim() == 4:
                self.outputs[path] = self._copy(output[0].detach())  # (C, H, W)

        return hook

    def _copy(self, out: torch.Tensor) -> torch.Tensor:
        """A half-precision CPU copy, shared with the previous one when the tensor has not changed since.

        Containers return their last child's tensor, so most copies are shared. The version counter tells
        whether an in-place op (ReLU(inplace=True), ``out += identity``) changed it in between; inference
        tensors have none, and are compared by value instead.
        """
        try:
            key: tuple[Any, ...] | None = (out.data_ptr(), tuple(out.shape), out.stride(), out._version)
        except RuntimeError:  # an inference tensor
            key = None
        last = self._last
        if last is not None and key is not None and key == self._last_key:
            return last
        copy = out.to("cpu", torch.float16)  # keeps the memory layout: no transpose of channels_last maps
        if copy.data_ptr() == out.data_ptr():  # .to() was a no-op (already CPU half)
            copy = copy.clone()
        if key is None and last is not None and last.shape == copy.shape and torch.equal(last, copy):
            return last
        self._stored.append(copy)
        # Holding the source keeps its memory from being reused by a later tensor with the same key.
        self._last, self._last_key, self._last_source = copy, key, out
        return copy

    def result(self) -> Recorded:
        nbytes = sum(t.numel() * t.element_size() for t in self._stored)
        rec = Recorded(dict(self.outputs), dict(self.shapes), list(self.order), nbytes=nbytes)
        if self.linear is not None:
            rec.head_layer, rec.head_input, rec.logits = self.linear
            rec.nbytes += (rec.head_input.numel() + rec.logits.numel()) * 4
        return rec


def record_layers(model: nn.Module, x: torch.Tensor) -> Recorded:
    """Run ``x`` (1, 3, H, W) through ``model`` once and keep every spatial output and the head's input."""
    # no_grad, not inference_mode: outputs keep version counters, which tell in-place changes apart
    with LayerRecorder(model) as recorder, torch.no_grad():
        model(x)
    return recorder.result()


def default_target_layer(order: Sequence[str], shapes: dict[str, list[int]], model: nn.Module) -> str | None:
    """The last conv stage: the last module to finish with a (C, H, W) output larger than 1x1, not a pool."""
    modules = dict(model.named_modules())
    for path in reversed(order):
        shape = shapes.get(path)
        if shape is None or len(shape) != 3 or shape[1] * shape[2] <= 1:
            continue
        if isinstance(modules.get(path), POOLING):
            continue
        return path
    return None


# --- pictures -------------------------------------------------------------------------------------------

# A perceptually ordered dark-to-bright map (anchor colours of matplotlib's "inferno").
_INFERNO = np.array(
    [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21], [250, 193, 39],
     [252, 255, 164]],
    dtype=np.float64,
)


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1], any shape -> uint8 RGB of shape ``values.shape + (3,)``."""
    positions = np.clip(values, 0.0, 1.0) * (len(_INFERNO) - 1)
    low = np.floor(positions).astype(int).clip(0, len(_INFERNO) - 2)
    frac = (positions - low)[..., None]
    rgb = _INFERNO[low] * (1 - frac) + _INFERNO[low + 1] * frac
    return rgb.round().astype(np.uint8)


def normalise_channels(maps: torch.Tensor) -> torch.Tensor:
    """Scale each channel of ``(C, H, W)`` to [0, 1] on its own (a constant channel becomes 0)."""
    flat = maps.float().flatten(1)  # (C, H*W)
    low = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - low
    return ((flat - low) / span.clamp_min(1e-12)).view_as(maps)


@dataclass(frozen=True)
class Grid:
    image: Image.Image
    columns: int
    rows: int
    tile: int  # tile side in pixels (tiles are square cells; maps are stretched to fill them)
    gap: int  # pixels between tiles
    order: list[int] = field(default_factory=list)  # channel index of each cell, row by row


def tile_grid(tiles: np.ndarray, order: Sequence[int], max_side: int = 1600, min_tile: int = 24) -> Grid:
    """Lay out ``tiles`` (N, h, w) or (N, h, w, 3), in [0, 1] or uint8, as one image, cells in ``order``.

    Each tile is scaled with nearest-neighbour to a square cell of ``tile`` pixels, so every unit stays
    visible; the whole grid is kept under ``max_side`` pixels a side.
    """
    count = len(order)
    columns = max(1, math.ceil(math.sqrt(count)))
    rows = max(1, math.ceil(count / columns))
    gap = 1
    natural = max(tiles.shape[1], tiles.shape[2], min_tile)
    tile = max(2, min(natural, (max_side - gap * (columns - 1)) // columns))
    h, w = tiles.shape[1], tiles.shape[2]
    ys = (np.arange(tile) * h // tile).clip(0, h - 1)
    xs = (np.arange(tile) * w // tile).clip(0, w - 1)
    cells = tiles[np.asarray(order, dtype=int)][:, ys][:, :, xs]  # (N, tile, tile) or (N, tile, tile, 3)
    if cells.dtype != np.uint8:
        cells = (np.clip(cells, 0, 1) * 255).round().astype(np.uint8)
    if cells.ndim == 3:
        cells = np.repeat(cells[..., None], 3, axis=3)
    padded = np.full((rows * columns, tile, tile, 3), 255, dtype=np.uint8)  # empty cells stay white
    padded[:count] = cells
    canvas = np.full((rows, tile + gap, columns, tile + gap, 3), 255, dtype=np.uint8)
    canvas[:, :tile, :, :tile] = padded.reshape(rows, columns, tile, tile, 3).transpose(0, 2, 1, 3, 4)
    height, width = rows * (tile + gap), columns * (tile + gap)
    canvas = canvas.reshape(height, width, 3)[: height - gap, : width - gap]  # no gap after the last cell
    return Grid(Image.fromarray(np.ascontiguousarray(canvas), "RGB"), columns, rows, tile, gap, list(order))


@dataclass(frozen=True)
class ChannelStats:
    channel: int
    mean: float
    std: float
    min: float
    max: float


def channel_stats(maps: torch.Tensor) -> list[ChannelStats]:
    """Mean, standard deviation, minimum and maximum of each channel of ``(C, H, W)``."""
    flat = maps.float().flatten(1)  # (C, H*W)
    means, stds = flat.mean(1), flat.std(1, correction=0)
    lows, highs = flat.min(1).values, flat.max(1).values
    return [
        ChannelStats(i, float(m), float(s), float(lo), float(hi))
        for i, (m, s, lo, hi) in enumerate(zip(means, stds, lows, highs, strict=True))
    ]


def upsample(values: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear ``(H, W)`` -> ``(size, size)`` so a map lies over the model's input picture."""
    grid = values.float()[None, None]  # (1, 1, H, W)
    up = torch.nn.functional.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)
    return up[0, 0]  # (size, size)


def overlay(view: Image.Image, heat: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """The coloured ``heat`` (H, W) in [0, 1], blended over ``view`` resized to the same size."""
    base = np.asarray(view.convert("RGB").resize((heat.shape[1], heat.shape[0])), dtype=np.float64)
    mixed = base * (1 - alpha) + colormap(heat).astype(np.float64) * alpha
    return Image.fromarray(mixed.round().astype(np.uint8), "RGB")
