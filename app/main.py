"""The app factory: ``create_app(settings)`` builds the FastAPI app; heavy objects are made in lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import torch
from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from app import __version__
from app.api import classify, convolve, datasets, explore, finetune, health, images, models
from app.core.config import REPO_ROOT, Settings, get_settings
from app.core.errors import ConvScopeError, install_error_handlers
from app.core.middleware import BodyLimitMiddleware, RequestLogMiddleware
from app.pages import classify as classify_page
from app.pages import explore as explore_page
from app.pages import playground as playground_page
from app.pages import transfer as transfer_page
from app.services.datasets import DatasetStore
from app.services.explorer import Explorer
from app.services.image_store import ImageStore
from app.services.jobs import JobManager
from app.services.model_store import ModelStore
from app.services.registry import Registry
from app.services.trained_models import TrainedModels

log = logging.getLogger("convscope")

DESCRIPTION = """See what a convolutional neural network does to an image.

Errors are `application/problem+json` (RFC 9457): `{"type", "title", "status", "detail", "instance"}`."""


def configure_torch(settings: Settings) -> None:
    """One pool of threads per process: requests queue for it (see Settings.inference_slots)."""
    torch.set_num_threads(settings.resolved_torch_threads())
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # can only be set once, before any parallel work; a second app keeps the first
        pass


def api_router() -> APIRouter:
    router = APIRouter(prefix="/api")
    for module in (health, images, models, classify, explore, convolve, datasets, finetune):
        router.include_router(module.router)
    return router


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_torch(settings)
        app.state.model_store = ModelStore(settings)
        app.state.image_store = ImageStore(settings)
        app.state.explorer = Explorer(settings, app.state.model_store)
        registry = Registry(settings.data_dir / "convscope.sqlite3")
        app.state.datasets = DatasetStore(settings, registry)
        app.state.trained_models = TrainedModels(settings, registry, app.state.model_store)
        restored = app.state.trained_models.restore()  # fine-tuned models survive a restart
        if restored:
            log.info("registered %d fine-tuned models", restored)
        app.state.jobs = JobManager(
            settings, registry, app.state.datasets, app.state.trained_models, app.state.model_store
        )
        app.state.jobs.start()
        if settings.preload:
            try:
                await run_in_threadpool(app.state.model_store.get, settings.default_model)
            except ConvScopeError as exc:  # the app still serves; the model's status says why
                log.warning("default model not loaded: %s", exc.detail)
        try:
            yield
        finally:
            await run_in_threadpool(app.state.jobs.stop)
            registry.close()

    app = FastAPI(title="ConvScope", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.templates = Jinja2Templates(directory=REPO_ROOT / "templates")
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(RequestLogMiddleware)
    app.mount("/static", StaticFiles(directory=REPO_ROOT / "static"), name="static")
    app.include_router(api_router())
    for page in (classify_page, playground_page, explore_page, transfer_page):
        app.include_router(page.router)
    return app
