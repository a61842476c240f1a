"""The arithmetic behind one layer on a small matrix, cell by cell, for the playground's step-through view.

Sums are :func:`math.fsum` of the listed products, so every output equals the sum of its step's products
(plus bias) exactly; the engine's ``conv2d`` agrees to float rounding (the tests check both).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from app.cnn.conv import (
    ActivationLayer,
    ConvLayer,
    Layer,
    LayerPlan,
    PoolLayer,
    SpecError,
    plan_layer,
)

MAX_SIDE = 32
MAX_CELLS = 65_536  # window cells over all steps: bounds the response size


@dataclass
class Step:
    row: int  # the output cell
    col: int
    rows: list[int]  # padded-input rows the window covers (spaced by the dilation)
    cols: list[int]
    window: list[list[float | None]]  # the values under the window; None for ignored pooling padding
    is_padding: list[list[bool]]
    value: float  # the output cell's value
    products: list[list[float]] | None = None  # conv: window × kernel, element-wise
    sum: float | None = None  # conv: fsum of the products, before the bias
    bias: float | None = None
    argmax: list[int] | None = None  # max pooling: [row, col] of the chosen cell, padded coordinates
    count: int | None = None  # avg pooling: cells averaged (padding is not counted)


@dataclass
class StepsResult:
    output: list[list[float]]
    formula: str
    padded: list[list[float | None]]  # the input with its padding; None for pooling padding (ignored)
    is_padding: list[list[bool]]
    padding: dict[str, int]  # top, bottom, left, right
    kernel: list[list[float]] | None
    steps: list[Step] = field(default_factory=list)


def matrix_tensor(values: list[list[float]], name: str = "input") -> torch.Tensor:
    """A ``(1, 1, H, W)`` float64 tensor from a rectangular, finite matrix of at most 32×32."""
    if not values or not all(values) or len({len(row) for row in values}) != 1:
        raise SpecError(name, "must be a non-empty rectangular matrix (rows of equal, non-zero length).")
    h, w = len(values), len(values[0])
    if h > MAX_SIDE or w > MAX_SIDE:
        raise SpecError(name, f"is {h}×{w}; each side must be 1-{MAX_SIDE}.")
    array = np.asarray(values, dtype=np.float64)
    if not np.isfinite(array).all() or np.abs(array).max() > 1e6:
        raise SpecError(name, "must hold finite numbers within ±1e6 (no NaN or infinity).")
    return torch.from_numpy(array).view(1, 1, h, w)


def _activate(layer: ActivationLayer, v: float) -> float:
    if layer.fn == "relu":
        return max(v, 0.0)
    if layer.fn == "leaky_relu":
        return v if v >= 0 else v * layer.negative_slope
    if layer.fn == "sigmoid":
        return 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))
    if layer.fn == "tanh":
        return math.tanh(v)
    return abs(v)


def explain(values: list[list[float]], layer: Layer, field_name: str = "layer") -> StepsResult:
    """Every output cell of ``layer`` on the matrix ``values`` with the window and arithmetic behind it.

    Raises:
        SpecError: a bad matrix, a layer that does not fit it, a 3-D or 4-D kernel, or too many cells.
    """
    x = matrix_tensor(values)  # (1, 1, H, W)
    h, w = x.shape[-2:]
    if isinstance(layer, ConvLayer) and layer.kind != "per_channel":
        raise SpecError(f"{field_name}.kernel", "must be a 2-D matrix here: the input is one channel.")
    step_plan: LayerPlan = plan_layer(layer, (1, h, w), field_name)
    _, oh, ow = step_plan.shape
    grid = x[0, 0].tolist()
    if isinstance(layer, ActivationLayer) or (isinstance(layer, PoolLayer) and layer.mode.startswith("g")):
        return _elementwise_or_global(grid, layer, step_plan)

    pad = step_plan.padding
    assert pad is not None
    if isinstance(layer, ConvLayer):
        kh, kw = layer.kernel_size
        (sh, sw), (dh, dw) = layer.stride, layer.dilation
        mode = "constant" if layer.padding_mode == "zeros" else layer.padding_mode
        padded_t = F.pad(x, (pad.left, pad.right, pad.top, pad.bottom), mode=mode)
        padded: list[list[float | None]] = padded_t[0, 0].tolist()
    else:
        assert isinstance(layer, PoolLayer)
        kh, kw = layer.kernel_size
        (sh, sw), (dh, dw) = layer.resolved_stride, (1, 1)
        padded = [[None] * (w + pad.left + pad.right) for _ in range(h + pad.top + pad.bottom)]
        for r in range(h):
            padded[r + pad.top][pad.left: pad.left + w] = grid[r]
    ph, pw = len(padded), len(padded[0])
    mask = [[not (pad.top <= r < pad.top + h and pad.left <= c < pad.left + w) for c in range(pw)]
            for r in range(ph)]
    if oh * ow * kh * kw > MAX_CELLS:
        raise SpecError(field_name, f"would list {oh}×{ow} steps of {kh}×{kw} cells = {oh * ow * kh * kw:,}; "
                        f"the limit is {MAX_CELLS:,}. Use a smaller matrix or kernel.")

    steps, output = [], []
    kernel = layer.kernel.double().tolist() if isinstance(layer, ConvLayer) else None
    for i in range(oh):
        out_row = []
        for j in range(ow):
            # ceil_mode pooling windows may run past the padded input: torch clips them, so do we
            rows = [r for r in (i * sh + a * dh for a in range(kh)) if r < ph]
            cols = [c for c in (j * sw + b * dw for b in range(kw)) if c < pw]
            window = [[padded[r][c] for c in cols] for r in rows]
            is_pad = [[mask[r][c] for c in cols] for r in rows]
            step = Step(i, j, rows, cols, window, is_pad, 0.0)
            if kernel is not None:
                assert isinstance(layer, ConvLayer)
                # + 0.0 turns -0.0 (a negative weight on a zero) into 0.0 for the display
                products = [[float(v) * k + 0.0 for v, k in zip(wr, kr, strict=True)]  # type: ignore[arg-type]
                            for wr, kr in zip(window, kernel, strict=True)]
                total = math.fsum(p for row in products for p in row)
                bias = layer.bias[0]
                step.products, step.sum, step.bias, step.value = products, total, bias, total + bias
            else:
                assert isinstance(layer, PoolLayer)
                cells = [(v, r, c) for r, wr in zip(rows, window, strict=True)
                         for c, v in zip(cols, wr, strict=True) if v is not None]
                if layer.mode == "max":
                    best = max(cells, key=lambda cell: cell[0])  # first maximum in reading order
                    step.value, step.argmax = best[0], [best[1], best[2]]
                else:
                    step.count = len(cells)
                    step.value = math.fsum(v for v, _, _ in cells) / len(cells)
            out_row.append(step.value)
            steps.append(step)
        output.append(out_row)
    padding = {"top": pad.top, "bottom": pad.bottom, "left": pad.left, "right": pad.right}
    return StepsResult(output, step_plan.formula, padded, mask, padding, kernel, steps)


def _elementwise_or_global(grid: list[list[float]], layer: ActivationLayer | PoolLayer,
                           step_plan: LayerPlan) -> StepsResult:
    h, w = len(grid), len(grid[0])
    no_pad = [[False] * w for _ in range(h)]
    padding = {"top": 0, "bottom": 0, "left": 0, "right": 0}
    if isinstance(layer, ActivationLayer):
        steps = [Step(r, c, [r], [c], [[v]], [[False]], _activate(layer, v))
                 for r, row in enumerate(grid) for c, v in enumerate(row)]
        output = [[_activate(layer, v) for v in row] for row in grid]
        return StepsResult(output, step_plan.formula, [list(r) for r in grid], no_pad, padding, None, steps)
    flat = [(v, r, c) for r, row in enumerate(grid) for c, v in enumerate(row)]
    step = Step(0, 0, list(range(h)), list(range(w)), [list(r) for r in grid], no_pad, 0.0)
    if layer.mode == "global_max":
        best = max(flat, key=lambda cell: cell[0])
        step.value, step.argmax = best[0], [best[1], best[2]]
    else:
        step.value, step.count = math.fsum(v for v, _, _ in flat) / len(flat), len(flat)
    grid_copy: list[list[float | None]] = [list(r) for r in grid]
    return StepsResult([[step.value]], step_plan.formula, grid_copy, no_pad, padding, None, [step])
