"""Explore timings, measured in one run: a layer switch against the first features request, and Grad-CAM
against one forward + backward pass of the same model.

1. POST /api/features for a new image (one forward pass recording every layer, then the grid) against the
   same image with another layer (from the cache: the grid only). Target: switch <= 0.25x first.
2. grad_cam (forward + backward to the last conv stage + the weighted sum) against one plain forward and
   backward pass on the same input (gradient w.r.t. the input); and the whole POST /api/explain.
3. The cache under many images: bytes held against Settings.explore_cache_bytes.

Run: .venv/bin/python bench/explore.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi.testclient import TestClient
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.cnn.explain import grad_cam  # noqa: E402
from app.core.config import Settings  # noqa: E402
from app.core.images import encode_png  # noqa: E402
from app.main import create_app  # noqa: E402

REPEATS = 5
LAYERS = ("blocks.1", "blocks.3", "blocks.5", "conv_stem")
CAT = ROOT / "static" / "samples" / "cat.jpg"


def upload(client: TestClient, seed: int) -> str:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(300, 400, 3), dtype=np.uint8)
    files = {"file": (f"noise{seed}.png", encode_png(Image.fromarray(pixels, "RGB")), "image/png")}
    return str(client.post("/api/images", files=files).json()["image_id"])


def timed(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    data = Path(tempfile.mkdtemp())
    settings = Settings(data_dir=data, models_dir=data / "models")
    with TestClient(create_app(settings)) as client:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
              f"cache limit {settings.explore_cache_bytes / 1e6:.0f} MB")

        def features(image_id: str, layer: str | None = None) -> None:
            response = client.post("/api/features", json={"image_id": image_id, "layer": layer})
            assert response.status_code == 200, response.text

        features(upload(client, 999))  # warm-up: first-call allocations, kernel selection
        first, switch = [], []
        for seed in range(REPEATS):
            image_id = upload(client, seed)
            first.append(timed(lambda image_id=image_id: features(image_id)))  # type: ignore[misc]
            for layer in LAYERS:
                switch.append(timed(lambda image_id=image_id, layer=layer: features(image_id, layer)))  # type: ignore[misc]
        f, s = statistics.median(first), statistics.median(switch)
        print(f"features, first request (forward + grid)   median {f:8.1f} ms  (n={len(first)})")
        print(f"features, layer switch (cache + grid)      median {s:8.1f} ms  (n={len(switch)})")
        print(f"  ratio switch / first: {s / f:.3f}  (target <= 0.25)")

        loaded = client.app.state.model_store.get("efficientnet_lite0")  # type: ignore[attr-defined]
        model = loaded.module
        x = loaded.spec.preprocessing.to_tensor(Image.open(CAT).convert("RGB"))[None]  # (1, 3, 224, 224)
        x = x.contiguous(memory_format=torch.channels_last)

        def forward_backward() -> None:
            with torch.enable_grad():
                inp = x.clone().requires_grad_(True)
                torch.autograd.grad(model(inp)[0, 282], inp)

        def cam() -> None:
            grad_cam(model, model.bn2, x, 282)

        forward_backward()
        cam()
        base = statistics.median(timed(forward_backward) for _ in range(REPEATS * 2))
        cams = statistics.median(timed(cam) for _ in range(REPEATS * 2))
        api = statistics.median(
            timed(lambda: client.post("/api/explain", json={"sample": "cat", "method": "gradcam"}))
            for _ in range(REPEATS)
        )
        print(f"one forward + backward (to the input)      median {base:8.1f} ms")
        print(f"grad_cam (forward + backward to bn2)       median {cams:8.1f} ms  ratio {cams / base:.2f}")
        print(f"POST /api/explain gradcam (with overlay)   median {api:8.1f} ms  ratio {api / base:.2f}")

        explorer = client.app.state.explorer  # type: ignore[attr-defined]
        peak = 0
        for seed in range(100, 116):
            features(upload(client, seed))
            peak = max(peak, explorer.cache_bytes)
        print(f"cache after 16 more images: {len(explorer.cache_keys())} entries, "
              f"{explorer.cache_bytes / 1e6:.0f} MB (peak {peak / 1e6:.0f} MB, "
              f"limit {settings.explore_cache_bytes / 1e6:.0f} MB, within: {peak <= settings.explore_cache_bytes})")


if __name__ == "__main__":
    main()
