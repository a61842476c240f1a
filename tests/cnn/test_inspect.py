"""Architecture description: parameter totals, output shapes and receptive fields, checked independently."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from app.cnn.inspect import ReceptiveField, describe
from app.cnn.models import default_zoo


def _shapes_by_hooks(model: nn.Module, size: int) -> dict[str, list[int]]:
    """Output shapes from a plain forward pass with the test's own hooks."""
    shapes: dict[str, list[int]] = {}

    def hook(path: str, output: torch.Tensor) -> None:
        shapes.setdefault(path, list(output.shape[1:]))

    handles = [
        m.register_forward_hook(lambda mod, a, o, p=p: hook(p, o)) for p, m in model.named_modules() if p
    ]
    try:
        with torch.no_grad():
            out = model(torch.randn(1, 3, size, size))
    finally:
        for h in handles:
            h.remove()
    shapes[""] = list(out.shape[1:])
    return shapes


@pytest.mark.slow
@pytest.mark.parametrize("name", list(default_zoo()))
def test_totals_and_shapes_match_the_real_model(name: str) -> None:
    spec = default_zoo()[name]
    model = spec.build().eval()
    size = spec.preprocessing.crop_size
    arch = describe(model, size)
    real = sum(p.numel() for p in model.parameters())
    assert arch.total_params == real == spec.num_params
    assert arch.trainable_params == real
    paths = [p for p, _ in model.named_modules() if p]
    assert [layer.path for layer in arch.layers] == paths
    shapes = _shapes_by_hooks(model, size)
    for layer in arch.layers:
        assert layer.output_shape == shapes.get(layer.path), layer.path
        assert layer.params_total == sum(p.numel() for p in model.get_submodule(layer.path).parameters())
    # the last layer's output is the logits
    assert arch.layers[-1].output_shape == [spec.num_classes] or shapes[""] == [spec.num_classes]
    assert not any(h for m in model.modules() for h in (m._forward_hooks, m._forward_pre_hooks))


def _small_stack() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 1, 3, stride=1, padding=1),
        nn.Conv2d(1, 1, 3, stride=2, padding=1),
        nn.MaxPool2d(2, 2),
        nn.Conv2d(1, 1, 3, padding=2, dilation=2),
        nn.AvgPool2d(3, stride=1, padding=1),
    )


def test_receptive_fields_of_a_small_stack_match_hand_computed_values() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), *list(_small_stack())[1:])
    model[1] = nn.Conv2d(4, 4, 3, stride=2, padding=1)
    model[3] = nn.Conv2d(4, 4, 3, padding=2, dilation=2)
    arch = describe(model, 32)
    by_path = {layer.path: layer for layer in arch.layers}
    # size r' = r + (k-1)*d*j ; jump j' = j*s ; start s' = s + ((k-1)*d/2 - p)*j
    assert by_path["0"].receptive_field == ReceptiveField((3, 3), (1, 1), (0.0, 0.0))
    assert by_path["1"].receptive_field == ReceptiveField((5, 5), (2, 2), (0.0, 0.0))
    assert by_path["2"].receptive_field == ReceptiveField((7, 7), (4, 4), (1.0, 1.0))
    assert by_path["3"].receptive_field == ReceptiveField((23, 23), (4, 4), (1.0, 1.0))
    assert by_path["4"].receptive_field == ReceptiveField((31, 31), (4, 4), (1.0, 1.0))
    assert by_path["3"].output_shape == [4, 8, 8]
    assert (by_path["3"].kernel_size, by_path["3"].stride, by_path["3"].padding, by_path["3"].dilation) == (
        [3, 3], [1, 1], [2, 2], [2, 2]
    )
    assert by_path["0"].groups == 1
    # a dense layer from (3, 32, 32) to (4, 32, 32) needs in*out weights plus out biases
    assert by_path["0"].fc_equivalent_params == 3 * 32 * 32 * 4 * 32 * 32 + 4 * 32 * 32
    assert by_path["0"].params_weight == 4 * 3 * 9 and by_path["0"].params_bias == 4


class Residual(nn.Module):
    """A 3x3 path and a strided 1x1 shortcut added together, like a ResNet downsampling block."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 1, 3, stride=2, padding=1)
        self.b = nn.Conv2d(1, 1, 3, padding=1)
        self.shortcut = nn.Conv2d(1, 1, 1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x)) + self.shortcut(x)


def _measured_field(model: nn.Module, size: int, i: int, j: int) -> tuple[int, int, float, float]:
    """Receptive field of output unit (i, j) measured with gradients: the input pixels that reach it."""
    for p in model.parameters():
        nn.init.constant_(p, 0.1)  # positive weights: every pixel in the field has a non-zero gradient
    x = torch.ones(1, 1, size, size, requires_grad=True)
    out = model(x)
    (grad,) = torch.autograd.grad(out[0, 0, i, j], x)
    rows = grad[0, 0].abs().sum(1).nonzero().flatten()
    cols = grad[0, 0].abs().sum(0).nonzero().flatten()
    height, width = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
    return height, width, float(rows[0] + rows[-1]) / 2, float(cols[0] + cols[-1]) / 2


def _avg_stack() -> nn.Sequential:
    # average pooling: max pooling's gradient reaches one pixel per window, so it would under-measure
    layers = list(_small_stack())[:4]
    layers[2] = nn.AvgPool2d(2, 2)
    return nn.Sequential(*layers)


@pytest.mark.parametrize("factory", [_avg_stack, Residual])
def test_receptive_field_matches_the_gradient_footprint_of_an_inner_unit(factory) -> None:
    model = factory()
    size, i, j = 64, 3, 4
    # describe() feeds 3 channels: a channel mean in front keeps the field of a single pixel
    arch = describe(nn.Sequential(_MeanChannels(), model), size)
    outer = arch.layers[1] if isinstance(model, Residual) else arch.layers[-1]
    rf = outer.receptive_field
    assert rf is not None
    height, width, cy, cx = _measured_field(model, size, i, j)
    assert (height, width) == rf.size
    assert (cy, cx) == (rf.start[0] + i * rf.jump[0], rf.start[1] + j * rf.jump[1])


class _MeanChannels(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(1, keepdim=True)  # (B, 1, H, W): keeps the field a single pixel


def test_residual_block_takes_the_wider_branch() -> None:
    arch = describe(nn.Sequential(_MeanChannels(), Residual()), 16)
    by_path = {layer.path: layer for layer in arch.layers}
    assert by_path["1.shortcut"].receptive_field == ReceptiveField((1, 1), (2, 2), (0.0, 0.0))
    assert by_path["1.b"].receptive_field == ReceptiveField((7, 7), (2, 2), (0.0, 0.0))
    assert by_path["1"].receptive_field == ReceptiveField((7, 7), (2, 2), (0.0, 0.0))


def test_global_pooling_sees_the_whole_image_and_linear_has_no_field() -> None:
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 5))
    arch = describe(model, 20)
    by_path = {layer.path: layer for layer in arch.layers}
    pool = by_path["1"].receptive_field
    assert pool is not None and pool.size[0] >= 20
    assert by_path["3"].receptive_field is None and by_path["3"].output_shape == [5]
    assert by_path["3"].params_weight == 10 and by_path["3"].params_bias == 5
    assert arch.total_params == sum(p.numel() for p in model.parameters())


def test_frozen_parameters_are_not_trainable() -> None:
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    for p in model[0].parameters():
        p.requires_grad_(False)
    arch = describe(model, 8)
    assert arch.trainable_params == 2 * 6 * 6 * 3 + 3
    assert [layer.trainable for layer in arch.layers] == [False, True, True]


def test_known_receptive_fields_of_real_networks() -> None:
    zoo = default_zoo()
    resnet = {layer.path: layer for layer in describe(zoo["resnet18"].build().eval(), 224).layers}
    assert resnet["layer4"].receptive_field.size == (435, 435)  # the published ResNet-18 value
    assert resnet["layer4"].receptive_field.jump == (32, 32)
    lite0 = {layer.path: layer for layer in describe(zoo["efficientnet_lite0"].build().eval(), 224).layers}
    # TF "same" padding of a stride-2 3x3 on 224 pads 0 before, 1 after: unit 0 is centred on pixel 1
    assert lite0["conv_stem"].receptive_field == ReceptiveField((3, 3), (2, 2), (1.0, 1.0))
    assert lite0["bn2"].receptive_field.jump == (32, 32)
    assert lite0["conv_head"].fc_equivalent_params == 320 * 49 * 1280 * 49
