from __future__ import annotations

import platform

import timm
import torch
import torchvision
from fastapi import APIRouter
from pydantic import BaseModel

from app import __version__
from app.api.deps import ModelStoreDep, SettingsDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    version: str
    device: str
    torch_threads: int
    versions: dict[str, str]
    default_model: str
    default_model_loaded: bool


@router.get("/health", response_model=Health)
def read_health(settings: SettingsDep, store: ModelStoreDep) -> Health:
    """Liveness, the device in use, library versions and whether the default model is loaded."""
    return Health(
        status="ok",
        version=__version__,
        device=str(store.device),
        torch_threads=torch.get_num_threads(),
        versions={
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "timm": timm.__version__,
        },
        default_model=settings.default_model,
        default_model_loaded=store.is_loaded(settings.default_model),
    )
