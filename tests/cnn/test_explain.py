"""Explanations: Grad-CAM on a real cat, formulas checked on tiny models, hooks always removed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from app.cnn.explain import capture_output, grad_cam, occlusion, occlusion_positions, saliency
from app.cnn.features import upsample
from app.cnn.models import efficientnet_lite0_spec
from tests.cnn.test_features import hook_count
from tests.conftest import SAMPLES

TABBY, TIGER_CAT, ESPRESSO = 281, 282, 967


@pytest.fixture(scope="module")
def lite0(tmp_path_factory: pytest.TempPathFactory) -> nn.Module:
    return efficientnet_lite0_spec().load(tmp_path_factory.mktemp("models"))


def lite0_input(image: Image.Image) -> torch.Tensor:
    return efficientnet_lite0_spec().preprocessing.to_tensor(image)[None]  # (1, 3, 224, 224)


def heat_inside_and_outside(heat: torch.Tensor, box: tuple[int, int, int, int]) -> tuple[float, float]:
    """Mean heat per pixel inside ``box`` (left, top, right, bottom in the 224x224 input) and outside it."""
    full = upsample(heat, 224).numpy()
    inside = np.zeros_like(full, dtype=bool)
    left, top, right, bottom = box
    inside[top:bottom, left:right] = True
    return float(full[inside].mean()), float(full[~inside].mean())


def cat_and_cup() -> tuple[Image.Image, tuple[int, int, int, int], tuple[int, int, int, int]]:
    """The cat photo and the coffee photo side by side on grey, with their boxes in the model's 224 input.

    The canvas is 256x256, so the preprocessing (short side to 256, centre crop 224) only cuts 16 px a side.
    """
    cat = Image.open(SAMPLES / "cat.jpg").convert("RGB").resize((120, 80))
    cup = Image.open(SAMPLES / "coffee.jpg").convert("RGB").resize((110, 73))
    canvas = Image.new("RGB", (256, 256), (128, 128, 128))
    canvas.paste(cat, (20, 30))
    canvas.paste(cup, (130, 140))
    return canvas, (20 - 16, 30 - 16, 140 - 16, 110 - 16), (130 - 16, 140 - 16, 240 - 16, 213 - 16)


@pytest.mark.parametrize("plus", [False, True])
def test_grad_cam_on_the_cat_photo_lies_on_the_cat_face(lite0: nn.Module, plus: bool) -> None:
    # static/samples/cat.jpg (451x300) is a close-up: the crop the model sees is all cat. The face (both eyes,
    # nose and mouth) spans x 120..350, y 60..280 of the photo; in the 224 input (scale 256/300, then a
    # 224 centre crop: x - 94, y - 19 in photo pixels) that is about x 22..218, y 35..224.
    image = Image.open(SAMPLES / "cat.jpg").convert("RGB")
    result = grad_cam(lite0, lite0.bn2, lite0_input(image), TIGER_CAT, plus=plus)
    assert result.heat.shape == (7, 7) and float(result.heat.max()) == pytest.approx(1.0)
    inside, outside = heat_inside_and_outside(result.heat, (22, 35, 218, 224))
    assert inside > 1.3 * outside
    assert result.probability > 0.3
    assert hook_count(lite0) == 0


@pytest.mark.slow
@pytest.mark.parametrize("plus", [False, True])
def test_grad_cam_follows_the_chosen_class(lite0: nn.Module, plus: bool) -> None:
    image, cat_box, cup_box = cat_and_cup()
    x = lite0_input(image)
    cat = grad_cam(lite0, lite0.bn2, x, TABBY, plus=plus)
    inside, outside = heat_inside_and_outside(cat.heat, cat_box)
    assert inside > 2 * outside
    cup = grad_cam(lite0, lite0.bn2, x, ESPRESSO, plus=plus)
    on_cup, off_cup = heat_inside_and_outside(cup.heat, cup_box)
    assert on_cup > 2 * off_cup
    assert heat_inside_and_outside(cup.heat, cup_box)[0] > heat_inside_and_outside(cup.heat, cat_box)[0]
    assert all(p.grad is None for p in lite0.parameters())  # the shared weights were not touched


class TinyCam(nn.Module):
    """conv -> ReLU -> global average pool -> linear: Grad-CAM equals the class activation map here."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.act(self.conv(x))).flatten(1))


def test_grad_cam_equals_the_class_activation_map_for_a_pooled_linear_head() -> None:
    model = TinyCam().eval()
    x = torch.randn(1, 3, 6, 6)
    result = grad_cam(model, model.act, x, 2)
    with torch.no_grad():
        a = model.act(model.conv(x))[0]  # (5, 6, 6)
        logits = model(x)[0]
    cam = (model.fc.weight[2][:, None, None] * a).sum(0).clamp_min(0)  # Zhou et al.'s CAM
    assert torch.allclose(result.heat, cam / cam.max(), atol=1e-5)
    assert result.logit == pytest.approx(float(logits[2]))
    assert result.probability == pytest.approx(float(logits.softmax(0)[2]))
    plus = grad_cam(model, model.act, x, 2, plus=True)
    assert plus.heat.shape == (6, 6) and float(plus.heat.min()) >= 0
    assert float(plus.heat.max()) == pytest.approx(1)
    assert hook_count(model) == 0


class TopLeftOnly(nn.Module):
    """A 'classifier' whose class 0 depends only on the top-left 8x8 pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        corner = (x[:, :, :8, :8] ** 2).mean(dim=(1, 2, 3)) * self.scale  # (B,)
        return torch.stack([corner, torch.zeros_like(corner)], dim=1)  # (B, 2)


@pytest.mark.parametrize("samples", [1, 4])
def test_saliency_is_zero_where_the_class_does_not_look(samples: int) -> None:
    x = torch.randn(1, 3, 32, 32)
    result = saliency(TopLeftOnly(), x, 0, samples=samples)
    assert result.method == ("smoothgrad" if samples > 1 else "saliency")
    assert result.heat.shape == (32, 32)
    assert float(result.heat[:8, :8].max()) == pytest.approx(1.0)
    assert float(result.heat[8:, :].abs().max()) == 0 and float(result.heat[:, 8:].abs().max()) == 0


def test_occlusion_heat_covers_only_the_region_that_matters() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 32) + 3  # far from 0 so hiding the corner lowers class 0
    result = occlusion(TopLeftOnly(), x, 0, window=8, stride=8)
    assert result.heat.shape == (32, 32)
    assert float(result.heat[:8, :8].min()) == pytest.approx(1.0)
    assert float(result.heat[8:, :].max()) == 0 and float(result.heat[:, 8:].max()) == 0


def test_occlusion_windows_cover_the_edges() -> None:
    assert occlusion_positions(224, 56, 28) == [0, 28, 56, 84, 112, 140, 168]
    assert occlusion_positions(10, 4, 4) == [0, 4, 6]
    assert occlusion_positions(8, 8, 4) == [0]


@pytest.mark.parametrize("method", ["gradcam", "saliency", "occlusion"])
def test_bad_target_raises_and_leaves_no_hook(method: str) -> None:
    model = TinyCam().eval()
    x = torch.randn(1, 3, 6, 6)
    with pytest.raises(ValueError, match=r"0\.\.3, got 4"):
        if method == "gradcam":
            grad_cam(model, model.act, x, 4)
        elif method == "saliency":
            saliency(model, x, 4)
        else:
            occlusion(model, x, 4, window=3, stride=3)
    assert hook_count(model) == 0


def test_capture_output_removes_its_hook_on_error() -> None:
    model = TinyCam()
    with pytest.raises(KeyError), capture_output(model.conv):
        raise KeyError("boom")
    assert hook_count(model) == 0


def test_lite0_weights_are_real(lite0: nn.Module) -> None:
    """Sanity: the cat is a cat (guards the CAM tests against a silently random model)."""
    x = lite0_input(Image.open(SAMPLES / "cat.jpg").convert("RGB"))
    with torch.no_grad():
        assert int(lite0(x).argmax()) in {TABBY, TIGER_CAT, 285}
