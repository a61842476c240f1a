"""Settings, read from the environment (prefix ``CONVSCOPE_``) or passed to ``create_app``."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]


class Settings(BaseSettings):
    """Every knob of the app. ``CONVSCOPE_MAX_UPLOAD_BYTES=1000000`` sets ``max_upload_bytes``."""

    model_config = SettingsConfigDict(env_prefix="CONVSCOPE_", env_file=None, extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # Where uploads, datasets, jobs and fine-tuned models live.
    data_dir: Path = REPO_ROOT / "data"
    # Where torchvision weights files are looked for before the torch cache (see models/README.md).
    models_dir: Path = REPO_ROOT / "models"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Threads for one torch op; 0 means one per core. Requests share them: see inference_slots.
    torch_threads: int = Field(0, ge=0, le=256)
    # Forward passes allowed to run at once; more would oversubscribe the cores on CPU.
    inference_slots: int = Field(1, ge=1, le=64)
    # Per uploaded file, checked before decoding.
    max_upload_bytes: int = Field(20_000_000, ge=1)
    # Width x height, checked from the header before the pixels are decoded.
    max_pixels: int = Field(40_000_000, ge=1)
    # Files in one batch classification.
    max_batch: int = Field(16, ge=1, le=256)
    # Uploaded images kept in memory (least recently used are dropped first).
    image_cache_items: int = Field(64, ge=1)
    image_cache_bytes: int = Field(1_000_000_000, ge=1)
    # Playground: an image's longest side is scaled down to this before it is convolved.
    convolve_max_side: int = Field(2048, ge=16, le=8192)
    # Playground: the largest layer output, channels x height x width; a pipeline exceeding it is a 422.
    convolve_max_values: int = Field(16_777_216, ge=1)
    # Playground: the work one pipeline may cost, in multiply-adds (a 31×31 kernel on a 2048² RGB photo is
    # 12e9, about a second on two cores); more is a 422, so no request runs for minutes.
    convolve_max_multiply_adds: int = Field(20_000_000_000, ge=1)
    # Playground: layers in one pipeline.
    convolve_max_layers: int = Field(12, ge=1, le=64)
    # Playground: a rendered layer picture with more pixels than this is scaled down to fit.
    convolve_max_render_pixels: int = Field(4_194_304, ge=1024)
    # Layer recordings kept for the explore page, per (image, model), least recently used dropped first.
    # EfficientNet-Lite0 needs about 40 MB per image (every layer's output in float16).
    explore_cache_bytes: int = Field(268_435_456, ge=0)
    default_model: str = "efficientnet_lite0"
    # Load the default model at start-up rather than on first use.
    preload: bool = True
    # Let torchvision download missing pretrained weights (needs internet).
    allow_downloads: bool = False
    log_level: str = "INFO"

    # --- transfer learning (datasets from zips, fine-tune jobs) ---
    # Largest dataset zip accepted (the file itself).
    dataset_max_zip_bytes: int = Field(200_000_000, ge=1)
    # Sum of the uncompressed sizes the zip declares (zip bombs are refused before anything is read).
    dataset_max_unpacked_bytes: int = Field(500_000_000, ge=1)
    # Entries in one zip, folders included.
    dataset_max_files: int = Field(5_000, ge=1)
    # Uncompressed / compressed size of the whole archive; images barely compress, bombs do by 1000x.
    dataset_max_ratio: float = Field(100.0, gt=1)
    # Images one job trains on (kept in memory as uint8 crops, ~150 kB each at 224x224).
    finetune_max_images: int = Field(3_000, ge=4)
    # Jobs waiting behind the running one; more are refused with 409.
    finetune_max_queued: int = Field(8, ge=1, le=1000)
    # torch threads of the training process; 0 means one per core. 1 leaves the other cores to the API.
    train_threads: int = Field(1, ge=0, le=256)
    # Scheduling niceness of the training process (0-19): the API's requests win the CPU.
    train_nice: int = Field(10, ge=0, le=19)

    @property
    def max_request_bytes(self) -> int:
        """Largest request body accepted: a full batch of maximal images, or a dataset zip, plus multipart overhead."""
        return max(self.max_upload_bytes * self.max_batch, self.dataset_max_zip_bytes) + 1_000_000

    def resolved_torch_threads(self) -> int:
        return self.torch_threads or (os.cpu_count() or 1)


@lru_cache
def get_settings() -> Settings:
    return Settings()
