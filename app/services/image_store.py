"""Images the app works on: uploads kept in a bounded in-memory cache, and the sample gallery.

Both are addressed the same way by the API (``image_id`` or ``sample``) through :meth:`ImageStore.resolve`.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from app.core.config import REPO_ROOT, Settings
from app.core.errors import InvalidParameter, NotFound
from app.core.images import decode_image, encode_png
from app.services.lru import evict_lru

SAMPLES_DIR = REPO_ROOT / "static" / "samples"


@dataclass
class StoredImage:
    image_id: str
    image: Image.Image  # RGB
    format: str
    name: str = ""
    _png: bytes | None = field(default=None, repr=False)

    @property
    def nbytes(self) -> int:
        return self.image.width * self.image.height * 3

    def png(self) -> bytes:
        if self._png is None:
            self._png = encode_png(self.image)
        return self._png


@dataclass(frozen=True)
class Sample:
    name: str
    title: str
    file: str
    width: int
    height: int
    source: str
    license: str

    @property
    def url(self) -> str:
        return f"/static/samples/{self.file}"


def load_samples(folder: Path = SAMPLES_DIR) -> dict[str, Sample]:
    entries = json.loads((folder / "samples.json").read_text())
    return {e["name"]: Sample(**e) for e in entries}


class ImageStore:
    def __init__(self, settings: Settings, samples_dir: Path = SAMPLES_DIR) -> None:
        self.settings = settings
        self.samples_dir = samples_dir
        self.samples = load_samples(samples_dir)
        self._images: OrderedDict[str, StoredImage] = OrderedDict()
        self._sample_images: dict[str, StoredImage] = {}
        self._lock = threading.Lock()

    def decode(self, data: bytes, name: str = "file") -> StoredImage:
        decoded = decode_image(
            data, max_bytes=self.settings.max_upload_bytes, max_pixels=self.settings.max_pixels, what=name
        )
        return StoredImage(uuid.uuid4().hex, decoded.image, decoded.format, name)

    def add(self, data: bytes, name: str = "file") -> StoredImage:
        """Decode and keep an upload; the least recently used images go when the cache is full."""
        stored = self.decode(data, name)
        with self._lock:
            self._images[stored.image_id] = stored
            evict_lru(self._images, lambda s: s.nbytes, self.settings.image_cache_bytes,
                      self.settings.image_cache_items)
        return stored

    def get(self, image_id: str) -> StoredImage:
        with self._lock:
            stored = self._images.get(image_id)
            if stored is None:
                raise NotFound(
                    f"no image {image_id!r}: it was never uploaded or has left the cache; upload it again."
                )
            self._images.move_to_end(image_id)
            return stored

    def sample(self, name: str) -> StoredImage:
        sample = self.samples.get(name)
        if sample is None:
            raise NotFound(f"unknown sample {name!r}; choose one of: {', '.join(self.samples)}.")
        with self._lock:
            stored = self._sample_images.get(name)
        if stored is None:
            data = (self.samples_dir / sample.file).read_bytes()
            decoded = decode_image(data, max_bytes=len(data), max_pixels=self.settings.max_pixels, what=name)
            stored = StoredImage(f"sample:{name}", decoded.image, decoded.format, name)
            with self._lock:
                self._sample_images[name] = stored
        return stored

    def resolve(self, image_id: str | None, sample: str | None) -> StoredImage:
        """The image named by exactly one of ``image_id`` and ``sample``."""
        if (image_id is None) == (sample is None):
            raise InvalidParameter("give exactly one of image_id (from POST /api/images) and sample.")
        return self.get(image_id) if image_id is not None else self.sample(sample)  # type: ignore[arg-type]
