"""The explorer service: one forward pass per (image, model), a bounded LRU cache, any registered model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from app.cnn.models import ModelSpec, Preprocessing, WeightsStatus
from app.core.config import Settings
from app.core.errors import Conflict, InvalidParameter
from app.services.explorer import Explorer
from app.services.image_store import StoredImage
from app.services.model_store import ModelStore
from tests.cnn.test_features import hook_count

CATEGORIES = tuple(f"breed {i}" for i in range(10))


def finetuned_spec(name: str = "pets10", available: bool = True, seed: int = 0) -> ModelSpec:
    """A 10-class ResNet-18 'fine-tuned' elsewhere: random weights, its own categories and input size."""
    torch.manual_seed(seed)
    state = torchvision.models.resnet18(num_classes=10).state_dict()

    def locate(models_dir: Path, allow_downloads: bool) -> WeightsStatus:
        if available:
            return WeightsStatus("checkpoint", f"{name}.pt", models_dir / f"{name}.pt")
        return WeightsStatus("missing", f"{name}.pt", detail=f"{name}.pt is not in {models_dir}")

    return ModelSpec(
        name=name,
        title="Pets (10 breeds)",
        family="finetuned",
        num_params=sum(t.numel() for k, t in state.items() if "running" not in k and "num_batches" not in k),
        categories=CATEGORIES,
        preprocessing=Preprocessing(72, 64, "bilinear", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        build=lambda: torchvision.models.resnet18(num_classes=10),
        locate=locate,
        load_weights=lambda status: state,
    )


def image(seed: int) -> StoredImage:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(70, 90, 3), dtype=np.uint8)
    return StoredImage(f"img{seed}", Image.fromarray(pixels, "RGB"), "PNG")


@pytest.fixture
def make_explorer(tmp_path: Path):
    def make(cache_bytes: int = 1 << 30, **specs: ModelSpec) -> Explorer:
        settings = Settings(data_dir=tmp_path, models_dir=tmp_path, explore_cache_bytes=cache_bytes)
        store = ModelStore(settings, specs=specs or {"pets10": finetuned_spec()})
        return Explorer(settings, store)

    return make


def test_layer_switch_uses_the_cached_forward_pass(make_explorer) -> None:
    explorer = make_explorer()
    first = explorer.features(image(0), "pets10", None)
    assert first.layer == "layer4" and first.shape == [512, 2, 2] and not first.cached
    switched = explorer.features(image(0), "pets10", "layer1.0.conv1", sort="activation", top_k=3)
    assert switched.cached and switched.shape == [64, 16, 16]
    assert [s.channel for s in switched.top] == switched.grid.order[:3]
    assert len(switched.grid.order) == 64 == len(switched.stats)
    assert switched.receptive_field is not None and switched.receptive_field.size == (19, 19)
    assert explorer.cache_keys() == [("img0", "pets10")]
    assert hook_count(explorer.store.get("pets10").module) == 0


def test_cache_stays_within_its_byte_limit_and_drops_the_least_recently_used(make_explorer) -> None:
    one = make_explorer().record(image(0), "pets10")[1].nbytes
    explorer = make_explorer(cache_bytes=int(one * 2.5))
    for seed in range(4):
        explorer.record(image(seed), "pets10")
        assert explorer.cache_bytes <= int(one * 2.5)
    assert explorer.cache_keys() == [("img2", "pets10"), ("img3", "pets10")]
    assert explorer.record(image(2), "pets10")[2]  # a hit, and img3 is now the oldest
    explorer.record(image(4), "pets10")
    assert explorer.cache_keys() == [("img2", "pets10"), ("img4", "pets10")]


def test_a_recording_larger_than_the_limit_is_served_but_not_kept(make_explorer) -> None:
    explorer = make_explorer(cache_bytes=1000)
    assert not explorer.features(image(0), "pets10", None).cached
    assert not explorer.features(image(0), "pets10", None).cached
    assert explorer.cache_keys() == [] and explorer.cache_bytes == 0


def test_re_registering_a_model_invalidates_its_recordings(make_explorer) -> None:
    explorer = make_explorer()
    before = explorer.head(image(0), "pets10")
    explorer.store.register(finetuned_spec(seed=1))
    after = explorer.head(image(0), "pets10")
    assert before.features != after.features
    assert explorer.architecture("pets10").total_params == sum(
        p.numel() for p in torchvision.models.resnet18(num_classes=10).parameters()
    )


def test_a_finetuned_model_gets_its_own_classes_everywhere(make_explorer) -> None:
    explorer = make_explorer()
    head = explorer.head(image(0), "pets10", top_k=20)
    assert (head.num_classes, len(head.classes), head.layer, head.in_features) == (10, 10, "fc", 512)
    assert {c.label for c in head.classes} == set(CATEGORIES)
    logits = torch.tensor([c.logit for c in head.classes])
    assert [c.probability for c in head.classes] == pytest.approx((logits - head.logsumexp).exp().tolist())
    # the top class's logit is the sum of the fully connected layer's products plus its bias
    module = explorer.store.get("pets10").module
    top = head.classes[0]
    logit = float(module.fc.weight.detach()[top.index] @ torch.tensor(head.features)) + head.bias
    assert logit == pytest.approx(top.logit, abs=1e-3)
    result = explorer.explain(image(0), "pets10", "gradcam", target=9)
    assert (result.target, result.label, result.layer) == (9, "breed 9", "layer4")
    assert result.overlay.size == (64, 64) and np.asarray(result.values).shape == (2, 2)
    with pytest.raises(InvalidParameter, match=r"0\.\.9 for pets10, got 10"):
        explorer.explain(image(0), "pets10", "gradcam++", target=10)
    with pytest.raises(InvalidParameter, match="no \\(C, H, W\\) spatial maps"):
        explorer.explain(image(0), "pets10", "gradcam", layer="fc")
    assert hook_count(module) == 0


def test_architecture_needs_no_weights_but_feature_maps_do(make_explorer) -> None:
    explorer = make_explorer(nothing=finetuned_spec("nothing", available=False))
    arch = explorer.architecture("nothing")
    assert arch.input_shape == [3, 64, 64] and arch.layers[-1].path == "fc"
    with pytest.raises(Conflict, match=r"nothing\.pt is not in"):
        explorer.features(image(0), "nothing", None)
    with pytest.raises(Conflict):
        explorer.explain(image(0), "nothing", "gradcam")
    with pytest.raises(Conflict):
        explorer.filters("nothing", None)


@pytest.mark.gpu
def test_every_view_runs_on_cuda(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, models_dir=tmp_path, device="cuda")
    explorer = Explorer(settings, ModelStore(settings, specs={"pets10": finetuned_spec()}))
    assert explorer.store.get("pets10").device.type == "cuda"
    assert explorer.features(image(0), "pets10", "layer2", channel=3).channel_overlay is not None
    assert explorer.head(image(0), "pets10").num_classes == 10
    assert explorer.filters("pets10", "layer1.0.conv1").shape == [64, 64, 3, 3]
    for method in ("gradcam", "gradcam++", "saliency", "occlusion"):
        result = explorer.explain(image(0), "pets10", method, target=3, samples=2, window=32, stride=16)
        assert result.overlay.size == (64, 64)
