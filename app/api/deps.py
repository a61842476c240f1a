"""Typed dependencies: the app's settings and services, as built by ``create_app``'s lifespan."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.core.config import Settings
from app.services.datasets import DatasetStore
from app.services.explorer import Explorer
from app.services.image_store import ImageStore
from app.services.jobs import JobManager
from app.services.model_store import ModelStore
from app.services.trained_models import TrainedModels


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_model_store(request: Request) -> ModelStore:
    return request.app.state.model_store  # type: ignore[no-any-return]


def get_image_store(request: Request) -> ImageStore:
    return request.app.state.image_store  # type: ignore[no-any-return]


def get_explorer(request: Request) -> Explorer:
    return request.app.state.explorer  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
ModelStoreDep = Annotated[ModelStore, Depends(get_model_store)]
ImageStoreDep = Annotated[ImageStore, Depends(get_image_store)]
ExplorerDep = Annotated[Explorer, Depends(get_explorer)]


def get_datasets(request: Request) -> DatasetStore:
    return request.app.state.datasets  # type: ignore[no-any-return]


def get_jobs(request: Request) -> JobManager:
    return request.app.state.jobs  # type: ignore[no-any-return]


def get_trained_models(request: Request) -> TrainedModels:
    return request.app.state.trained_models  # type: ignore[no-any-return]


DatasetStoreDep = Annotated[DatasetStore, Depends(get_datasets)]
JobManagerDep = Annotated[JobManager, Depends(get_jobs)]
TrainedModelsDep = Annotated[TrainedModels, Depends(get_trained_models)]
