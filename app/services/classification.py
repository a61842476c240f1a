"""Classification as a service: images in, top-k predictions and where the time went out."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image

from app.cnn.classify import Prediction, predict_proba, top_k
from app.services.image_store import ImageStore
from app.services.model_store import ModelStore


@dataclass(frozen=True)
class Classification:
    model: str
    predictions: list[Prediction]
    timings_ms: dict[str, float] = field(default_factory=dict)
    forward_batch: int = 1  # images in the forward pass that served it (concurrent requests share one)


def classify_images(
    store: ModelStore, images: Sequence[Image.Image], model: str, k: int
) -> list[Classification]:
    """Classify several images in one forward pass. ``k`` is clamped to the number of classes.

    ``timings_ms`` holds the milliseconds spent preprocessing, waiting for and running the forward pass, and in
    all; ``forward_batch`` how many images (this request's and others') that forward pass held.
    """
    loaded = store.get(model)
    start = time.perf_counter()
    batch = torch.stack([loaded.spec.preprocessing.to_tensor(img) for img in images])  # (B, 3, H, W)
    batch = batch.to(loaded.device).contiguous(memory_format=torch.channels_last)
    preprocessed = time.perf_counter()
    # (B, num_classes); the forward pass may also serve other requests waiting at the same time
    probabilities, merged = store.forward_merged(loaded, batch, predict_proba)
    forwarded = time.perf_counter()
    rows = top_k(probabilities, loaded.spec.categories, k)
    timings = {
        "preprocess": round((preprocessed - start) * 1000, 2),
        "queue_and_forward": round((forwarded - preprocessed) * 1000, 2),
        "total": round((time.perf_counter() - start) * 1000, 2),
    }
    return [Classification(model, row, dict(timings), merged) for row in rows]


def classify_uploads(
    store: ModelStore, images: ImageStore, uploads: Sequence[tuple[str, bytes]], model: str, k: int
) -> list[Classification]:
    """Decode uploaded files (each checked like any upload) and classify them as one batch."""
    store.spec(model)  # an unknown model is a 404 before any decoding
    start = time.perf_counter()
    decoded = [images.decode(raw, name).image for name, raw in uploads]
    decode_ms = round((time.perf_counter() - start) * 1000, 2)
    results = classify_images(store, decoded, model, k)
    for result in results:
        result.timings_ms["decode"] = decode_ms
        result.timings_ms["total"] = round(result.timings_ms["total"] + decode_ms, 2)
    return results
