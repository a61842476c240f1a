from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from app.api.deps import ModelStoreDep
from app.cnn.models import ModelSpec

router = APIRouter(tags=["models"])


class WeightsInfo(BaseModel):
    available: bool
    # bundled, models_dir, torch_cache, checkpoint, download (allowed, not yet here) or missing
    source: str
    file_name: str
    detail: str


class ModelInfo(BaseModel):
    name: str
    title: str
    family: str
    description: str
    weights: WeightsInfo
    loaded: bool
    num_classes: int
    input_size: list[int]  # [C, H, W] the network is given
    num_params: int
    preprocessing: dict[str, object]


def model_info(store: ModelStoreDep, spec: ModelSpec) -> ModelInfo:
    status = store.weights_status(spec.name)
    crop = spec.preprocessing.crop_size
    return ModelInfo(
        name=spec.name,
        title=spec.title,
        family=spec.family,
        description=spec.description,
        weights=WeightsInfo(
            available=status.available, source=status.source, file_name=status.file_name, detail=status.detail
        ),
        loaded=store.is_loaded(spec.name),
        num_classes=spec.num_classes,
        input_size=[3, crop, crop],
        num_params=spec.num_params,
        preprocessing=spec.preprocessing.as_dict(),
    )


@router.get("/models", response_model=list[ModelInfo])
def read_models(store: ModelStoreDep) -> list[ModelInfo]:
    """Every model, whether its weights are here, its classes, input size and parameter count."""
    return [model_info(store, spec) for spec in store.specs()]


@router.get("/models/{name}", response_model=ModelInfo)
def read_model(name: str, store: ModelStoreDep) -> ModelInfo:
    return model_info(store, store.spec(name))
