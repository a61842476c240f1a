"""Architecture of any network: layers as a tree with output shapes, parameter counts and receptive fields.

Nothing here needs trained weights: :func:`describe` runs one forward pass of a zero image through a
private module (build one with ``spec.build()``) and records, for every module, what it produced.

Receptive fields are tracked per tensor, not per layer list, so branches (residual shortcuts, a strided 1x1
downsample next to a 3x3 path) are handled: a dispatch mode sees every aten op of the forward pass and
carries ``(size, jump, start)`` from each op's inputs to its outputs. ``start`` is the input-pixel centre of
output unit 0; unit ``i`` sees the pixels centred on ``start + i * jump``, ``size`` wide.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakTensorKeyDictionary


@dataclass(frozen=True)
class ReceptiveField:
    """Per axis (height, width): how many input pixels one unit sees, its step and where unit 0 is centred."""

    size: tuple[int, int]
    jump: tuple[int, int]
    start: tuple[float, float]

    @staticmethod
    def pixel() -> ReceptiveField:
        return ReceptiveField((1, 1), (1, 1), (0.0, 0.0))

    def then(
        self, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int]
    ) -> ReceptiveField:
        """The field after a sliding window (convolution or pooling) applied to this one."""
        size, jump, start = [], [], []
        for axis in range(2):
            k, s, p, d = kernel[axis], stride[axis], padding[axis], dilation[axis]
            size.append(self.size[axis] + (k - 1) * d * self.jump[axis])
            jump.append(self.jump[axis] * s)
            start.append(self.start[axis] + ((k - 1) * d / 2 - p) * self.jump[axis])
        return ReceptiveField((size[0], size[1]), (jump[0], jump[1]), (start[0], start[1]))

    def shifted(self, pad_top: int, pad_left: int) -> ReceptiveField:
        """Explicit padding moves unit 0 up/left by the padded amount."""
        return ReceptiveField(
            self.size,
            self.jump,
            (self.start[0] - pad_top * self.jump[0], self.start[1] - pad_left * self.jump[1]),
        )


def _pair(value: Any, default: int) -> tuple[int, int]:
    if value is None or (isinstance(value, list | tuple) and len(value) == 0):
        return (default, default)
    if isinstance(value, int):
        return (value, value)
    values = [int(v) for v in value]
    return (values[0], values[-1]) if len(values) < 2 else (values[-2], values[-1])


class ReceptiveFieldTracker(TorchDispatchMode):
    """Carries a :class:`ReceptiveField` along every tensor of a forward pass (see the module docstring)."""

    def __init__(self, image: torch.Tensor) -> None:
        super().__init__()
        self.fields: WeakTensorKeyDictionary = WeakTensorKeyDictionary()
        self.image_size = (int(image.shape[-2]), int(image.shape[-1]))
        self.fields[image] = ReceptiveField.pixel()

    def field(self, tensor: torch.Tensor) -> ReceptiveField | None:
        return self.fields.get(tensor)

    def _incoming(self, args: Sequence[Any]) -> ReceptiveField:
        known = [self.fields[a] for a in args if isinstance(a, torch.Tensor) and a in self.fields]
        if not known:
            return ReceptiveField.pixel()
        # A sum of branches sees the union of what each branch sees: keep the widest.
        return max(known, key=lambda f: f.size[0] * f.size[1])

    def _whole_image(self, incoming: ReceptiveField) -> ReceptiveField:
        h, w = self.image_size
        return ReceptiveField(
            (max(incoming.size[0], 2 * h - 1), max(incoming.size[1], 2 * w - 1)),
            (h, w),
            ((h - 1) / 2, (w - 1) / 2),
        )

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        incoming = self._incoming(args)
        x = args[0] if args else None
        result = incoming
        if name in ("conv2d", "convolution") and isinstance(x, torch.Tensor) and x.dim() == 4:
            weight = args[1]
            kernel = (int(weight.shape[-2]), int(weight.shape[-1]))
            rest = list(args[3:]) + [None] * 4
            stride, padding, dilation = _pair(rest[0], 1), rest[1], _pair(rest[2], 1)
            if name == "convolution" and bool(rest[3]):  # transposed: leave the field as is
                padding = None
            if padding == "same":
                padding = tuple((k - 1) * d // 2 for k, d in zip(kernel, dilation, strict=True))
            elif padding == "valid":
                padding = (0, 0)
            if padding is not None:
                result = incoming.then(kernel, stride, _pair(padding, 0), dilation)
        elif name in ("max_pool2d", "max_pool2d_with_indices", "avg_pool2d") and len(args) > 1:
            rest = list(args[1:]) + [None] * 4
            kernel = _pair(rest[0], 1)
            stride = _pair(rest[1], 0)
            stride = kernel if stride == (0, 0) else stride
            dilation = _pair(rest[3], 1) if name != "avg_pool2d" else (1, 1)
            result = incoming.then(kernel, stride, _pair(rest[2], 0), dilation)
        elif name in ("adaptive_avg_pool2d", "adaptive_max_pool2d", "_adaptive_avg_pool2d") and x is not None:
            size_in = (int(x.shape[-2]), int(x.shape[-1]))
            size_out = _pair(args[1], 1)
            if size_out == (1, 1):
                result = self._whole_image(incoming)
            elif size_in != size_out:  # an approximation: windows of ceil(in/out) every floor(in/out)
                windows = [math.ceil(i / o) for i, o in zip(size_in, size_out, strict=True)]
                steps = [max(1, i // o) for i, o in zip(size_in, size_out, strict=True)]
                result = incoming.then(windows, steps, (0, 0), (1, 1))
        elif name in ("mean", "amax", "sum") and isinstance(x, torch.Tensor) and x.dim() == 4:
            dims = args[1] if len(args) > 1 else kwargs.get("dim")
            if dims is not None and {int(d) % 4 for d in dims} >= {2, 3}:
                result = self._whole_image(incoming)
        elif name in ("pad", "constant_pad_nd", "reflection_pad2d", "replication_pad2d") and len(args) > 1:
            pad = [int(p) for p in args[1]]  # (left, right, top, bottom)
            result = incoming.shifted(pad[2] if len(pad) > 2 else 0, pad[0])
        for tensor in out if isinstance(out, list | tuple) else (out,):
            if isinstance(tensor, torch.Tensor):
                self.fields[tensor] = result
        return out


@dataclass
class LayerInfo:
    """One module of the network, in the order its forward pass finished."""

    path: str  # dotted module path, as in named_modules()
    type: str  # class name
    depth: int  # 1 for the model's children
    parent: str  # "" for the model's children
    is_leaf: bool
    output_shape: list[int] | None  # without the batch dimension; None if the module was not run
    input_shape: list[int] | None
    params_weight: int  # this module's own parameters named "weight"
    params_bias: int
    params_other: int  # any other own parameter
    params_total: int  # everything below this module, itself included
    trainable: bool  # all its parameters require grad
    kernel_size: list[int] | None = None
    stride: list[int] | None = None
    padding: list[int] | str | None = None
    dilation: list[int] | None = None
    groups: int | None = None
    receptive_field: ReceptiveField | None = None
    fc_equivalent_params: int | None = None  # a dense layer from the same input to the same output

    @property
    def spatial(self) -> bool:
        return self.output_shape is not None and len(self.output_shape) == 3

    @property
    def params_own(self) -> int:
        return self.params_weight + self.params_bias + self.params_other


@dataclass
class Architecture:
    input_shape: list[int]  # (3, H, W)
    layers: list[LayerInfo] = field(default_factory=list)

    @property
    def total_params(self) -> int:
        return sum(layer.params_own for layer in self.layers)

    @property
    def trainable_params(self) -> int:
        return sum(layer.params_own for layer in self.layers if layer.trainable)


def _own_params(module: nn.Module) -> tuple[int, int, int]:
    weight = bias = other = 0
    for name, param in module.named_parameters(recurse=False):
        if name == "weight":
            weight += param.numel()
        elif name == "bias":
            bias += param.numel()
        else:
            other += param.numel()
    return weight, bias, other


def _ints(value: Any) -> list[int] | str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return [value, value]
    return [int(v) for v in value]


@contextmanager
def forward_hooks(modules: Sequence[tuple[str, nn.Module]], hook: Any) -> Iterator[None]:
    """Register ``hook(path, module, args, output)`` on each module and remove every handle afterwards."""
    handles = []
    try:
        for path, module in modules:
            handles.append(module.register_forward_hook(lambda m, a, o, p=path: hook(p, m, a, o)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def describe(model: nn.Module, input_size: int) -> Architecture:
    """Every module of ``model`` with shapes, parameter counts and receptive fields for one input size.

    Args:
        model: a private network (not the shared one: this runs a forward pass on it).
        input_size: the square crop the model is given.
    """
    named = [(p, m) for p, m in model.named_modules() if p]
    seen: dict[str, tuple[list[int] | None, list[int] | None, ReceptiveField | None]] = {}
    image = torch.zeros(1, 3, input_size, input_size)  # (1, 3, H, W)
    tracker = ReceptiveFieldTracker(image)

    def record(path: str, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if path in seen:  # a module called twice keeps its first call
            return
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        out = output if isinstance(output, torch.Tensor) else None
        field_ = tracker.field(out) if out is not None and out.dim() == 4 else None
        seen[path] = (
            list(out.shape[1:]) if out is not None else None,
            list(x.shape[1:]) if x is not None else None,
            field_,
        )

    with forward_hooks(named, record), torch.no_grad(), tracker:
        model(image)

    arch = Architecture([3, input_size, input_size])
    for path, module in named:
        weight, bias, other = _own_params(module)
        out_shape, in_shape, rf = seen.get(path, (None, None, None))
        total = sum(p.numel() for p in module.parameters())
        info = LayerInfo(
            path=path,
            type=type(module).__name__,
            depth=path.count(".") + 1,
            parent=path.rpartition(".")[0],
            is_leaf=not any(True for _ in module.children()),
            output_shape=out_shape,
            input_shape=in_shape,
            params_weight=weight,
            params_bias=bias,
            params_other=other,
            params_total=total,
            trainable=all(p.requires_grad for p in module.parameters()),
            receptive_field=rf,
        )
        if isinstance(module, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
            info.kernel_size = _ints(module.kernel_size)  # type: ignore[assignment]
            info.stride = _ints(module.stride)  # type: ignore[assignment]
            info.padding = _ints(module.padding)
            info.dilation = _ints(getattr(module, "dilation", 1))  # type: ignore[assignment]
        if isinstance(module, nn.Conv2d):
            info.groups = module.groups
            if in_shape is not None and out_shape is not None:
                n_in, n_out = math.prod(in_shape), math.prod(out_shape)
                info.fc_equivalent_params = n_in * n_out + (n_out if module.bias is not None else 0)
        arch.layers.append(info)
    return arch
