"""The model zoo: the offline default loads strictly and classifies real photos; torchvision weights are found,
checked and refused honestly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torchvision
from PIL import Image

from app.cnn.classify import predict_proba, top_k
from app.cnn.models import (
    IMAGENET_CATEGORIES,
    WeightsUnavailableError,
    default_zoo,
    efficientnet_lite0_spec,
    rename_lite0_keys,
    sha256_of,
    torchvision_spec,
)
from tests.conftest import SAMPLES


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    return efficientnet_lite0_spec().load(Path("/nonexistent"))


def test_lite0_keys_rename_onto_every_timm_key() -> None:
    spec = efficientnet_lite0_spec()
    status = spec.weights_status(Path("/nonexistent"))
    assert status.source == "bundled" and status.path is not None
    original = torch.load(status.path, map_location="cpu", weights_only=True)
    renamed = rename_lite0_keys(original)
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    assert set(renamed) == set(target)
    assert all(renamed[k].shape == target[k].shape for k in target)
    assert torch.equal(renamed["blocks.2.0.bn2.weight"], original["_blocks.3._bn1.weight"])


def test_lite0_parameter_count_and_categories(lite0: torch.nn.Module) -> None:
    spec = efficientnet_lite0_spec()
    assert sum(p.numel() for p in lite0.parameters()) == spec.num_params
    assert spec.categories[281] == "tabby" and len(spec.categories) == 1000
    assert spec.categories == tuple(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def test_lite0_preprocessing_matches_its_training() -> None:
    pre = efficientnet_lite0_spec().preprocessing
    image = Image.new("RGB", (640, 480), (255, 0, 128))
    assert pre.view(image).size == (224, 224)
    x = pre.to_tensor(image)
    assert x.shape == (3, 224, 224)
    # mean = std = 0.5 maps 255 -> 1, 0 -> -1
    assert torch.allclose(x[:, 100, 100], torch.tensor([1.0, -1.0, 128 / 255 * 2 - 1]), atol=1e-6)


@pytest.mark.parametrize(
    ("sample", "expected"), [("cat", {"tabby", "tiger cat", "Egyptian cat"}), ("coffee", {"espresso"})]
)
def test_lite0_recognises_real_photos(lite0: torch.nn.Module, sample: str, expected: set[str]) -> None:
    pre = efficientnet_lite0_spec().preprocessing
    x = pre.to_tensor(Image.open(SAMPLES / f"{sample}.jpg").convert("RGB"))[None]
    probabilities = predict_proba(lite0, x)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(1))
    (best, *_), = top_k(probabilities, IMAGENET_CATEGORIES, 5)
    assert best.label in expected
    assert best.probability > 0.3


def test_a_corrupted_lite0_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "efficientnet-lite0-57934424.pth").write_bytes(b"not the weights")
    with pytest.raises(WeightsUnavailableError, match="sha256"):
        efficientnet_lite0_spec().load(tmp_path)


def test_top_k_is_clamped_to_the_number_of_classes() -> None:
    probabilities = torch.tensor([[0.1, 0.6, 0.3]])
    (rows,) = top_k(probabilities, ["a", "b", "c"], 50)
    assert [(p.index, p.label) for p in rows] == [(1, "b"), (2, "c"), (0, "a")]
    assert len(top_k(probabilities, ["a", "b", "c"], 1)[0]) == 1


def test_torchvision_models_without_weights_say_which_file_is_missing(tmp_path: Path) -> None:
    spec = default_zoo()["resnet18"]
    status = spec.weights_status(tmp_path)
    assert not status.available
    assert status.file_name == "resnet18-f37072fd.pth"
    assert f"put resnet18-f37072fd.pth in {tmp_path}" in status.detail
    with pytest.raises(WeightsUnavailableError, match="resnet18-f37072fd.pth"):
        spec.load(tmp_path)
    assert spec.weights_status(tmp_path, allow_downloads=True).source == "download"


def _save_resnet18(path_dir: Path) -> tuple[str, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()
    tmp = path_dir / "tmp.pth"
    torch.save(state, tmp)
    name = f"resnet18-{sha256_of(tmp)[:8]}.pth"
    tmp.rename(path_dir / name)
    return name, state


def test_torchvision_weights_load_strictly_from_the_models_folder(tmp_path: Path) -> None:
    name, state = _save_resnet18(tmp_path)
    spec = torchvision_spec("resnet18", "ResNet-18", "", file_name=name)
    assert spec.weights_status(tmp_path).source == "models_dir"
    model = spec.load(tmp_path)
    assert torch.equal(model.state_dict()["fc.weight"], state["fc.weight"])
    assert not model.training


def test_a_torchvision_file_with_the_wrong_hash_is_refused(tmp_path: Path) -> None:
    name, _ = _save_resnet18(tmp_path)
    (tmp_path / name).rename(tmp_path / "resnet18-00000000.pth")
    spec = torchvision_spec("resnet18", "ResNet-18", "", file_name="resnet18-00000000.pth")
    with pytest.raises(WeightsUnavailableError, match="not the official file"):
        spec.load(tmp_path)


@pytest.mark.slow
def test_every_zoo_entry_reports_its_real_parameter_count_and_input() -> None:
    for spec in default_zoo().values():
        model = spec.build()
        assert sum(p.numel() for p in model.parameters()) == spec.num_params, spec.name
        assert spec.num_classes == 1000
        with torch.inference_mode():
            size = spec.preprocessing.crop_size
            assert model.eval()(torch.zeros(1, 3, size, size)).shape == (1, 1000), spec.name
        del model


def test_view_is_deterministic_and_uses_the_centre() -> None:
    pre = default_zoo()["resnet18"].preprocessing
    array = np.zeros((300, 600, 3), dtype=np.uint8)
    array[:, 300:] = 255  # right half white
    view = np.asarray(pre.view(Image.fromarray(array)))
    assert view.shape == (224, 224, 3)
    assert view[:, :100].max() < 10 and view[:, 124:].min() > 245


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet50"])
def test_view_matches_torchvision_resize_then_center_crop(name: str) -> None:
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import v2 as T

    pre = default_zoo()[name].preprocessing
    reference = T.Compose([
        T.Resize(pre.resize_size, interpolation=InterpolationMode(pre.interpolation), antialias=True),
        T.CenterCrop(pre.crop_size),
    ])
    for sample in ("cat", "coffee", "rocket", "astronaut"):
        image = Image.open(SAMPLES / f"{sample}.jpg").convert("RGB")
        ours, theirs = np.asarray(pre.view(image), dtype=int), np.asarray(reference(image), dtype=int)
        assert ours.shape == theirs.shape == (pre.crop_size, pre.crop_size, 3)
        assert np.abs(ours - theirs).max() <= 1  # rounding at the crop's edge, nothing more


def test_a_thin_strip_is_never_resized_to_a_giant_picture(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[tuple[int, int]] = []
    resize = Image.Image.resize

    def recording(self: Image.Image, size: tuple[int, int], *args: object, **kwargs: object) -> Image.Image:
        sizes.append(tuple(size))  # type: ignore[arg-type]
        return resize(self, size, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Image.Image, "resize", recording)
    strip = Image.new("RGB", (1, 10_000), (40, 80, 120))
    view = efficientnet_lite0_spec().preprocessing.view(strip)
    assert view.size == (224, 224)
    assert np.asarray(view)[100, 100].tolist() == [40, 80, 120]
    assert max(w * h for w, h in sizes) <= 224 * 224  # the old path made 256 x 2,560,000 on the way
