"""Fine-tuned models: registered in the model zoo from their checkpoints, evaluated, exported, deleted.

A trained model is a checkpoint file (state_dict + metadata) under ``data_dir/models`` plus a registry row. At
start-up every row is registered again as a :class:`ModelSpec` of family ``finetuned``, so the model keeps
working in classify, feature maps and explanations after a restart.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from app.cnn.models import ModelSpec, Preprocessing, WeightsStatus
from app.cnn.training import with_new_classifier
from app.core.config import Settings
from app.core.errors import Conflict, NotFound
from app.services.model_store import ModelStore
from app.services.registry import Registry


def finetuned_spec(doc: dict[str, Any], base: ModelSpec, path: Path) -> ModelSpec:
    """The zoo entry of a fine-tuned model: the base architecture with a classifier of its own classes."""
    classes = tuple(doc["classes"])
    state: dict[str, Any] = {}

    def build() -> torch.nn.Module:
        return with_new_classifier(base.build(), len(classes))

    def locate(models_dir: Path, allow_downloads: bool) -> WeightsStatus:
        if path.is_file():
            return WeightsStatus("checkpoint", path.name, path)
        return WeightsStatus(
            "missing", path.name, detail=f"the checkpoint {path} is missing; train the model again."
        )

    def load_weights(status: WeightsStatus) -> dict[str, torch.Tensor]:
        assert status.path is not None
        checkpoint = torch.load(status.path, map_location="cpu", weights_only=True)
        state["meta"] = checkpoint["meta"]
        return checkpoint["state_dict"]  # type: ignore[no-any-return]

    accuracy = doc.get("evaluation", {}).get("accuracy")
    return ModelSpec(
        name=doc["name"],
        title=f"{doc['name']} (fine-tuned {base.title})",
        family="finetuned",
        num_params=int(doc["total_params"]),
        categories=classes,
        preprocessing=Preprocessing(**doc["preprocessing"]),
        build=build,
        locate=locate,
        load_weights=load_weights,
        description=(
            f"{base.title} {doc['mode'].replace('_', ' ')} on dataset {doc['dataset_name']!r}, "
            f"{len(classes)} classes"
            + (f", validation accuracy {accuracy:.3f}" if accuracy is not None else "")
            + "."
        ),
    )


class TrainedModels:
    def __init__(self, settings: Settings, registry: Registry, store: ModelStore) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store
        self.root = settings.data_dir / "models"
        self.root.mkdir(parents=True, exist_ok=True)
        self._export_lock = threading.Lock()

    def checkpoint_path(self, name: str) -> Path:
        return self.root / f"{name}.pt"

    def restore(self) -> int:
        """Register every recorded model whose checkpoint and base are here; returns how many."""
        count = 0
        for doc in self.registry.all("models"):
            if doc["base_model"] in self.store.names() and self.checkpoint_path(doc["name"]).is_file():
                self._register(doc)
                count += 1
        return count

    def _register(self, doc: dict[str, Any]) -> None:
        base = self.store.spec(doc["base_model"])
        self.store.register(finetuned_spec(doc, base, self.checkpoint_path(doc["name"])))

    def add(self, doc: dict[str, Any]) -> None:
        """Record a model whose checkpoint is already in place, then offer it in the zoo."""
        self.registry.put("models", doc)
        self._register(doc)

    def all(self) -> list[dict[str, Any]]:
        return self.registry.all("models")

    def get(self, name: str) -> dict[str, Any]:
        doc = self.registry.get("models", name)
        if doc is None:
            raise NotFound(f"unknown fine-tuned model {name!r}; GET /api/finetuned lists them.")
        return doc

    def delete(self, name: str) -> None:
        self.get(name)
        self.store.unregister(name)
        self.registry.delete("models", name)
        for path in (self.checkpoint_path(name), *self.root.glob(f"{name}.*.pt"), self.root / f"{name}.onnx"):
            path.unlink(missing_ok=True)

    def checkpoint(self, name: str) -> Path:
        self.get(name)
        path = self.checkpoint_path(name)
        if not path.is_file():
            raise Conflict(f"the checkpoint of {name!r} is missing from {self.root}; train the model again.")
        return path

    def torchscript(self, name: str) -> Path:
        """A traced TorchScript file of the model (made once, then kept next to the checkpoint)."""

        def write(model: torch.nn.Module, example: torch.Tensor, buffer: io.BytesIO) -> None:
            torch.jit.save(torch.jit.trace(model, example), buffer)

        return self._export(name, "torchscript.pt", write)

    def onnx(self, name: str) -> Path:
        """An ONNX file of the model, input ``input`` ``(batch, 3, H, W)``, output ``logits``."""
        try:
            import onnx  # noqa: F401  # torch's exporter needs it
        except ImportError:
            raise Conflict("ONNX export needs the onnx package on the server: pip install onnx.") from None

        def write(model: torch.nn.Module, example: torch.Tensor, buffer: io.BytesIO) -> None:
            torch.onnx.export(
                model,
                (example,),
                buffer,  # type: ignore[arg-type]  # the TorchScript exporter writes to file objects too
                dynamo=False,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            )

        return self._export(name, "onnx", write)

    def _export(
        self, name: str, suffix: str, write: Callable[[torch.nn.Module, torch.Tensor, io.BytesIO], None]
    ) -> Path:
        self.checkpoint(name)
        path = self.root / f"{name}.{suffix}"
        with self._export_lock:
            if path.is_file():
                return path
            spec = self.store.spec(name)
            model = spec.load(self.settings.models_dir).cpu().eval()
            crop = spec.preprocessing.crop_size
            buffer = io.BytesIO()
            with torch.inference_mode(False), torch.no_grad():
                write(model, torch.zeros(1, 3, crop, crop), buffer)  # example input (1, 3, crop, crop)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(buffer.getvalue())
            os.replace(tmp, path)  # a reader never sees half a file
        return path
