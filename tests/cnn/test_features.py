"""Recording layers with hooks that always go away, grids with one tile per channel, the default CAM layer."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from app.cnn.features import (
    LayerRecorder,
    channel_stats,
    colormap,
    default_target_layer,
    normalise_channels,
    record_layers,
    tile_grid,
)


def hook_count(model: nn.Module) -> int:
    """Module hooks of every kind left on ``model`` and its submodules."""
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return sum(len(getattr(m, kind)) for m in model.modules() for kind in kinds)


def small_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(inplace=True),
        nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU()),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    ).eval()


def test_records_every_spatial_output_before_in_place_changes() -> None:
    model = small_net()
    x = torch.randn(1, 3, 16, 16)
    rec = record_layers(model, x)
    assert rec.spatial_layers() == ["0", "1", "2", "3.0", "3.1", "3", "4"]
    assert rec.shapes["4"] == [6, 1, 1] and rec.shapes["5"] == [6] and rec.shapes["6"] == [3]
    with torch.no_grad():
        bn = model[1](model[0](x))[0]  # (4, 16, 16)
        logits = model(x)[0]
    # the BatchNorm output was copied before the in-place ReLU overwrote it
    assert torch.allclose(rec.outputs["1"].float(), bn, atol=1e-2) and (rec.outputs["1"] < 0).any()
    assert (rec.outputs["2"] >= 0).all()
    # a container returning its last child's tensor shares the copy
    assert rec.outputs["3"] is rec.outputs["3.1"]
    assert rec.head_layer == "6"
    assert torch.allclose(rec.logits, logits, atol=1e-5)
    assert torch.allclose(rec.head_input, model[:6](x)[0], atol=1e-5)
    distinct = {id(t): t for t in rec.outputs.values()}.values()
    assert rec.nbytes == sum(t.numel() * 2 for t in distinct) + (6 + 3) * 4
    assert hook_count(model) == 0


def test_hooks_are_removed_when_the_forward_pass_fails() -> None:
    model = small_net()
    with pytest.raises(RuntimeError), LayerRecorder(model):
        model(torch.randn(1, 5, 16, 16))  # wrong number of channels
    assert hook_count(model) == 0


def test_recorder_ignores_forward_passes_of_other_threads() -> None:
    model = small_net()
    with LayerRecorder(model) as recorder:
        worker = threading.Thread(target=lambda: model(torch.randn(1, 3, 8, 8)))
        worker.start()
        worker.join()
        assert recorder.shapes == {}
        model(torch.randn(1, 3, 16, 16))
    assert recorder.shapes["0"] == [4, 16, 16]
    assert hook_count(model) == 0


def test_grid_has_one_tile_per_channel_in_the_given_order() -> None:
    channels = 10
    tiles = np.stack([np.full((5, 7), c / (channels - 1)) for c in range(channels)])  # constant tiles
    order = list(reversed(range(channels)))
    grid = tile_grid(tiles, order)
    assert (grid.columns, grid.rows) == (4, 3)
    step = grid.tile + grid.gap
    assert grid.image.size == (4 * step - 1, 3 * step - 1)
    pixels = np.asarray(grid.image)
    seen = []
    for cell in range(grid.columns * grid.rows):
        r, c = divmod(cell, grid.columns)
        block = pixels[r * step : r * step + grid.tile, c * step : c * step + grid.tile, 0]
        if cell < channels:
            assert (block == block[0, 0]).all()
            seen.append(int(block[0, 0]))
        else:
            assert (block == 255).all()  # empty cells stay white
    assert seen == [round(c / (channels - 1) * 255) for c in order]


def test_grid_stays_within_its_size_limit() -> None:
    grid = tile_grid(np.zeros((1280, 7, 7)), list(range(1280)), max_side=800)
    assert max(grid.image.size) <= 800 and grid.columns * grid.rows >= 1280


def test_channel_normalisation_and_stats() -> None:
    maps = torch.tensor([[[1.0, 3.0], [5.0, 7.0]], [[2.0, 2.0], [2.0, 2.0]]])  # (2, 2, 2)
    norm = normalise_channels(maps)
    assert torch.equal(norm[0], torch.tensor([[0.0, 1 / 3], [2 / 3, 1.0]]))
    assert torch.equal(norm[1], torch.zeros(2, 2))
    stats = channel_stats(maps)
    assert (stats[0].mean, stats[0].min, stats[0].max) == (4.0, 1.0, 7.0)
    assert stats[0].std == pytest.approx(np.std([1, 3, 5, 7]))
    assert (stats[1].mean, stats[1].std) == (2.0, 0.0)


def test_colormap_runs_dark_to_bright() -> None:
    rgb = colormap(np.array([0.0, 0.5, 1.0]))
    assert rgb.dtype == np.uint8 and rgb.shape == (3, 3)
    assert list(rgb[0]) == [0, 0, 4] and list(rgb[-1]) == [252, 255, 164]
    assert rgb.astype(int).sum(1).tolist() == sorted(rgb.astype(int).sum(1).tolist())


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        (lambda: torchvision.models.resnet18(), "layer4"),
        (lambda: torchvision.models.vgg11(), "features"),  # its 7x7 adaptive pool is not a conv stage
        (lambda: torchvision.models.mobilenet_v3_small(), "features"),
        (small_net, "3"),
    ],
)
def test_default_target_layer_is_the_last_conv_stage(factory, expected: str) -> None:
    model = factory().eval()
    rec = record_layers(model, torch.randn(1, 3, 64, 64))
    assert default_target_layer(rec.order, rec.shapes, model) == expected


class FreesThenReallocates(nn.Module):
    """Two same-shaped outputs in a row with a functional op between: memory of the first may be reused."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 3, 1)
        self.b = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.a(x)
        x = torch.relu(x) * 0 + 1  # the output of a is freed here
        return self.b(x)


def test_outputs_of_different_modules_are_never_confused() -> None:
    torch.manual_seed(0)
    model = FreesThenReallocates().eval()
    # many sizes: the allocator hands the freed block back for some of them (64 and 256 did when written)
    for size in range(16, 400, 16):
        x = torch.randn(1, 3, size, size)
        rec = record_layers(model, x)
        with torch.no_grad():
            a = model.a(x)[0]
            b = model.b(torch.relu(model.a(x)) * 0 + 1)[0]
        assert torch.allclose(rec.outputs["a"].float(), a, atol=1e-2), size
        assert torch.allclose(rec.outputs["b"].float(), b, atol=1e-2), size


def test_records_the_shared_channels_last_model_correctly() -> None:
    model = small_net().to(memory_format=torch.channels_last)
    x = torch.randn(1, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    rec = record_layers(model, x)
    with torch.no_grad():
        expected = model[0](x)[0]
    assert torch.allclose(rec.outputs["0"].float(), expected, atol=1e-2)
    assert normalise_channels(rec.outputs["0"]).shape == (4, 16, 16)
