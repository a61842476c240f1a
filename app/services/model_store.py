"""The model store: loads each zoo model once, on the right device, and shares it between threads.

Loading is guarded by one lock per model name, so two first requests build a model once. Forward passes
are limited to ``inference_slots`` at a time: on a CPU every forward already uses all cores, so running
more at once only makes each one slower.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from app.cnn.models import ModelSpec, WeightsStatus, WeightsUnavailableError, default_zoo
from app.core.config import Settings
from app.core.errors import Conflict, NotFound

log = logging.getLogger("convscope.models")


@dataclass(frozen=True)
class LoadedModel:
    spec: ModelSpec
    module: nn.Module
    device: torch.device
    load_ms: float


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("CONVSCOPE_DEVICE=cuda but torch sees no CUDA device")
        return torch.device("cuda")
    return torch.device("cpu")


class ModelStore:
    def __init__(self, settings: Settings, specs: dict[str, ModelSpec] | None = None) -> None:
        self.settings = settings
        self.device = pick_device(settings.device)
        self._specs: dict[str, ModelSpec] = dict(specs if specs is not None else default_zoo())
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._slots = threading.BoundedSemaphore(settings.inference_slots)

    # --- the catalogue ---------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self._specs)

    def spec(self, name: str) -> ModelSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise NotFound(f"unknown model {name!r}; choose one of: {', '.join(self._specs)}.") from None

    def specs(self) -> list[ModelSpec]:
        return list(self._specs.values())

    def register(self, spec: ModelSpec) -> None:
        """Add (or replace) a model, e.g. a fine-tuned one; a loaded copy of an older version is dropped."""
        with self._guard:
            self._specs[spec.name] = spec
            self._loaded.pop(spec.name, None)

    def unregister(self, name: str) -> None:
        with self._guard:
            self._specs.pop(name, None)
            self._loaded.pop(name, None)

    def weights_status(self, name: str) -> WeightsStatus:
        return self.spec(name).weights_status(self.settings.models_dir, self.settings.allow_downloads)

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded

    # --- loading ---------------------------------------------------------------------------------------
    def get(self, name: str) -> LoadedModel:
        """The loaded model, built on first use. Raises Conflict when its weights are not available."""
        spec = self.spec(name)
        loaded = self._loaded.get(name)
        if loaded is not None:
            return loaded
        with self._guard:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            loaded = self._loaded.get(name)
            if loaded is None:
                loaded = self._load(spec)
                with self._guard:
                    self._loaded[name] = loaded
        return loaded

    def _load(self, spec: ModelSpec) -> LoadedModel:
        start = time.perf_counter()
        try:
            module = spec.load(self.settings.models_dir, self.settings.allow_downloads)
        except WeightsUnavailableError as exc:
            raise Conflict(f"{spec.name}: {exc}", model=spec.name) from exc
        module = module.to(self.device).eval()
        if self.device.type == "cpu":
            module = module.to(memory_format=torch.channels_last)
        load_ms = (time.perf_counter() - start) * 1000
        log.info("loaded %s on %s in %.0f ms", spec.name, self.device, load_ms)
        return LoadedModel(spec, module, self.device, load_ms)

    @contextmanager
    def inference_slot(self) -> Iterator[None]:
        """Hold one of the forward-pass slots (see Settings.inference_slots)."""
        with self._slots:
            yield
