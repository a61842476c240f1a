"""The model store: loads each zoo model once, on the right device, and shares it between threads.

Loading is guarded by one lock per model name, so two first requests build a model once. Forward passes
are limited to ``inference_slots`` at a time: on a CPU every forward already uses all cores, so running
more at once only makes each one slower. Classification requests that wait for a slot are merged: the first
to get it runs one forward pass for every waiting request of the same model (see :meth:`forward_merged`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
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


@dataclass(eq=False)
class _Waiting:
    """One request's batch waiting for a forward pass, and what came back."""

    model: str
    batch: torch.Tensor  # (B, 3, H, W)
    output: torch.Tensor | None = None
    error: BaseException | None = None
    merged: int = 0  # images in the forward pass that served it
    taken: bool = False  # a forward pass has it (another request's, maybe)
    done: bool = False


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
        self._slot_count = settings.inference_slots
        self._busy = 0  # slots in use
        self._slot_free = threading.Condition()  # guards _busy and _waiting
        self._waiting: list[_Waiting] = []

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
        log.info("loaded %s on %s in %.0f ms", spec.name, self.device, (time.perf_counter() - start) * 1000)
        return LoadedModel(spec, module, self.device)

    @contextmanager
    def inference_slot(self) -> Iterator[None]:
        """Hold one of the forward-pass slots (see Settings.inference_slots)."""
        with self._slot_free:
            while self._busy >= self._slot_count:
                self._slot_free.wait()
            self._busy += 1
        try:
            yield
        finally:
            with self._slot_free:
                self._busy -= 1
                self._slot_free.notify_all()

    def forward_merged(
        self, loaded: LoadedModel, batch: torch.Tensor, fn: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    ) -> tuple[torch.Tensor, int]:
        """``fn(module, batch)`` (row-wise, like a forward pass), sharing one call with concurrent requests.

        A request that waits for a slot leaves its batch in a queue; whoever gets the slot runs one call over its
        own batch and every waiting batch of the same model (up to ``max_batch`` images), so concurrent clients
        cost fewer, fuller forward passes instead of fighting over the cores. Returns the rows of ``batch`` and
        how many images the call held.
        """
        mine = _Waiting(loaded.spec.name, batch)
        with self._slot_free:
            self._waiting.append(mine)
            while mine.taken or (self._busy >= self._slot_count):
                if mine.done:  # another request's forward pass served this one
                    return self._result(mine)
                self._slot_free.wait()
            self._busy += 1
            group = self._take_group(mine)
        try:
            merged = torch.cat([w.batch for w in group])  # (sum of B, 3, H, W)
            output = fn(loaded.module, merged)
            start = 0
            for w in group:
                w.output, w.merged = output[start : start + len(w.batch)], len(merged)
                start += len(w.batch)
        except BaseException as exc:  # every request in the group hears of it
            for w in group:
                w.error = exc
        finally:
            with self._slot_free:
                for w in group:
                    w.done = True
                self._busy -= 1
                self._slot_free.notify_all()
        return self._result(mine)

    def _take_group(self, mine: _Waiting) -> list[_Waiting]:
        """Own batch first, then waiting batches of the same model and size, oldest first, up to max_batch."""
        group, size = [mine], len(mine.batch)
        for w in self._waiting:
            same = w is not mine and w.model == mine.model and w.batch.shape[1:] == mine.batch.shape[1:]
            if same and size + len(w.batch) <= self.settings.max_batch:
                group.append(w)
                size += len(w.batch)
        for w in group:
            w.taken = True
            self._waiting.remove(w)
        return group

    @staticmethod
    def _result(waiting: _Waiting) -> tuple[torch.Tensor, int]:
        if waiting.error is not None:
            raise waiting.error
        assert waiting.output is not None
        return waiting.output, waiting.merged
