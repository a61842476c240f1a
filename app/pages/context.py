"""What several pages show alike: the model picker and the photo picker."""

from __future__ import annotations

from typing import Any

from app.core.config import Settings
from app.services.image_store import ImageStore
from app.services.model_store import ModelStore


def model_choices(store: ModelStore) -> list[dict[str, Any]]:
    """Every model for a <select>: those without weights are shown, disabled, with the reason."""
    choices = []
    for spec in store.specs():
        crop = spec.preprocessing.crop_size
        choices.append({
            "name": spec.name,
            "title": spec.title,
            "available": store.weights_status(spec.name).available,
            "size": f"{crop}×{crop}",
            "summary": f"{spec.num_params / 1e6:.1f}M parameters · input 3×{crop}×{crop} · {spec.num_classes} classes",
        })
    return choices


def photo_picker(settings: Settings, images: ImageStore) -> dict[str, Any]:
    """The sample gallery and the upload limit."""
    return {"samples": list(images.samples.values()), "max_upload_mb": settings.max_upload_bytes / 1_000_000}
