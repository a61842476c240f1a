"""Labelled image datasets: unpacked safely from a zip (one folder per class) or built from a demo.

Unpacking never trusts the archive: entry names that would escape the folder (zip-slip) and symlinks are
refused outright; the declared total size, entry count and compression ratio are checked before anything is
decompressed, and every read is bounded by its declared size. Each file is decoded with the app's own image
rules; what is not an image is skipped and reported. Files are written under the data dir with names the
server chooses, into a temporary folder renamed into place, and only then recorded in the registry.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import time
import uuid
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from app.core.config import Settings
from app.core.errors import Conflict, ConvScopeError, InvalidParameter, NotFound, PayloadTooLarge
from app.core.images import decode_image, encode_png
from app.services.registry import Registry

EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WebP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}
MAX_CLASSES = 1000
MAX_CLASS_NAME = 64
THUMBNAIL = 96
DEMOS = {
    "digits": "Handwritten digits 0-9 (scikit-learn, 8x8 scans upscaled to 64x64)",
    "faces": "Faces vs not faces (scikit-image LFW subset, 25x25 greys upscaled to 64x64)",
}
ACTIVE = ("queued", "running")


@dataclass
class Unpacked:
    classes: list[str]
    items: list[tuple[int, bytes, str]] = field(default_factory=list)  # (label, file bytes, extension)
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"file", "reason"}


def _human(n: float) -> str:
    return f"{n / 1_000_000:.1f} MB" if n >= 1_000_000 else f"{int(n)} bytes"


def _unsafe(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":")


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def unpack_zip(data: bytes, settings: Settings) -> Unpacked:
    """Read an ImageFolder zip (``class/image.jpg``, optionally under one top folder) into memory, safely.

    Raises:
        InvalidParameter: not a zip, unsafe names, fewer than 2 classes, a class with fewer than 2 images.
        PayloadTooLarge: the zip, its unpacked size, entry count or compression ratio is over the limits.
    """
    if len(data) > settings.dataset_max_zip_bytes:
        raise PayloadTooLarge(
            f"the zip is {_human(len(data))}; the limit is {_human(settings.dataset_max_zip_bytes)}."
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise InvalidParameter(f"file is not a readable zip archive: {exc}.") from exc
    if len(infos) > settings.dataset_max_files:
        raise PayloadTooLarge(f"the zip has {len(infos)} entries; the limit is {settings.dataset_max_files}.")
    for info in infos:
        if _unsafe(info.filename) or _is_symlink(info):
            raise InvalidParameter(
                f"zip entry {info.filename!r} is a link or points outside the archive (zip-slip); refused."
            )
    total = sum(i.file_size for i in infos)
    packed = max(1, sum(i.compress_size for i in infos))
    if total > settings.dataset_max_unpacked_bytes:
        raise PayloadTooLarge(
            f"the zip unpacks to {_human(total)}; the limit is {_human(settings.dataset_max_unpacked_bytes)}."
        )
    if total > 1_000_000 and total / packed > settings.dataset_max_ratio:
        raise PayloadTooLarge(
            f"the zip's compression ratio is {total / packed:.0f}:1 (a zip bomb?); the limit is "
            f"{settings.dataset_max_ratio:.0f}:1."
        )

    skipped: list[dict[str, str]] = []
    entries: list[tuple[zipfile.ZipInfo, list[str]]] = []
    folders: set[str] = set()
    for info in infos:
        parts = [p for p in PurePosixPath(info.filename.replace("\\", "/")).parts if p]
        if not parts or parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts):
            continue  # macOS resource forks and hidden files are noise, not data
        if info.is_dir():
            folders.add("/".join(parts))
        else:
            entries.append((info, parts))
    # One folder wrapping the class folders (zipping "flowers/" gives flowers/daisy/1.jpg) is stripped; loose
    # files beside the class folders in it (a README, say) are then skipped like any file outside a class.
    tops = {parts[0] for _, parts in entries} | {f.split("/")[0] for f in folders}
    wrapped = len(tops) == 1 and any(len(parts) >= 3 for _, parts in entries)
    depth = 1 if wrapped else 0
    class_names = {parts[depth] for _, parts in entries if len(parts) > depth + 1}
    class_names |= {f.split("/")[depth] for f in folders if len(f.split("/")) > depth}
    too_long = [c for c in class_names if len(c) > MAX_CLASS_NAME]
    if too_long:
        raise InvalidParameter(
            f"class folder names must be at most {MAX_CLASS_NAME} characters: {too_long[0]!r}."
        )
    if len(class_names) > MAX_CLASSES:
        raise InvalidParameter(f"the zip has {len(class_names)} class folders; the limit is {MAX_CLASSES}.")
    classes = sorted(class_names)
    out = Unpacked(classes, skipped=skipped)
    label_of = {c: i for i, c in enumerate(classes)}
    for info, parts in entries:
        if len(parts) <= depth + 1:
            skipped.append({"file": info.filename, "reason": "not inside a class folder"})
            continue
        try:
            with archive.open(info) as fh:
                raw = fh.read(info.file_size + 1)
        except (zipfile.BadZipFile, RuntimeError, NotImplementedError, zlib.error, OSError, EOFError) as exc:
            skipped.append({"file": info.filename, "reason": f"cannot be unpacked: {exc}"})
            continue
        if len(raw) > info.file_size:
            raise PayloadTooLarge(f"zip entry {info.filename!r} unpacks to more than it declares; refused.")
        try:
            decoded = decode_image(
                raw, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels, what=info.filename
            )
        except ConvScopeError as exc:
            skipped.append({"file": info.filename, "reason": exc.detail})
            continue
        out.items.append((label_of[parts[depth]], raw, EXTENSIONS[decoded.format]))
    check_classes(classes, [label for label, _, _ in out.items])
    return out


def check_classes(classes: list[str], labels: list[int]) -> None:
    """At least 2 classes with at least 2 images each, or a 422 naming the classes that fall short."""
    if len(classes) < 2:
        raise InvalidParameter(
            f"a dataset needs at least 2 class folders with 2 or more images each; found {len(classes)} "
            f"({', '.join(classes) or 'none'}). Zip one folder per class: cats/1.jpg, dogs/2.jpg, ..."
        )
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
    short = [f"{c} ({n})" for c, n in zip(classes, counts.tolist(), strict=True) if n < 2]
    if short:
        raise InvalidParameter(f"every class needs at least 2 images; too few in: {', '.join(short)}.")


def demo_images(name: str, per_class: int) -> Unpacked:
    """A small dataset from data that ships inside scikit-learn / scikit-image (offline)."""
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        greys, targets = (digits.images * (255.0 / 16.0)).astype(np.uint8), digits.target
        classes = [str(d) for d in range(10)]
    elif name == "faces":
        from skimage.data import lfw_subset

        greys = (lfw_subset() * 255.0).astype(np.uint8)
        targets = np.repeat([0, 1], 100)  # the first 100 are faces, the last 100 are not
        classes = ["face", "not_face"]
    else:
        raise NotFound(f"unknown demo dataset {name!r}; choose one of: {', '.join(DEMOS)}.")
    out = Unpacked(classes)
    for label in range(len(classes)):
        for index in np.flatnonzero(targets == label)[:per_class]:
            image = Image.fromarray(greys[index], "L").resize((64, 64), Image.Resampling.BILINEAR)
            out.items.append((label, encode_png(image.convert("RGB")), ".png"))
    return out


class DatasetStore:
    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self.root = settings.data_dir / "datasets"
        self.root.mkdir(parents=True, exist_ok=True)

    def create(self, unpacked: Unpacked, name: str, source: str) -> dict[str, Any]:
        """Write the images under a temporary folder, rename it into place, then record the dataset."""
        dataset_id = uuid.uuid4().hex[:12]
        tmp = self.root / f".tmp-{dataset_id}"
        tmp.mkdir()
        items: list[list[Any]] = []
        try:
            for i, (label, raw, ext) in enumerate(unpacked.items):
                file_name = f"{i:05d}{ext}"
                (tmp / file_name).write_bytes(raw)
                items.append([label, file_name])
            os.replace(tmp, self.root / dataset_id)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        counts = np.bincount([label for label, _ in items], minlength=len(unpacked.classes)).tolist()
        doc = {
            "id": dataset_id,
            "name": name,
            "source": source,
            "created": time.time(),
            "classes": [{"name": c, "count": n} for c, n in zip(unpacked.classes, counts, strict=True)],
            "skipped": unpacked.skipped,
            "items": items,
        }
        self.registry.put("datasets", doc)
        return doc

    def create_from_zip(self, data: bytes, name: str) -> dict[str, Any]:
        return self.create(unpack_zip(data, self.settings), name, "upload")

    def create_demo(self, name: str, per_class: int) -> dict[str, Any]:
        return self.create(demo_images(name, per_class), f"demo: {name}", f"demo:{name}")

    def get(self, dataset_id: str) -> dict[str, Any]:
        doc = self.registry.get("datasets", dataset_id)
        if doc is None:
            raise NotFound(f"unknown dataset {dataset_id!r}; GET /api/datasets lists them.")
        return doc

    def all(self) -> list[dict[str, Any]]:
        return self.registry.all("datasets")

    def path(self, dataset_id: str) -> Path:
        return self.root / dataset_id

    def image_path(self, dataset_id: str, index: int) -> Path:
        items = self.get(dataset_id)["items"]
        if not 0 <= index < len(items):
            raise NotFound(f"dataset {dataset_id!r} has images 0..{len(items) - 1}, not {index}.")
        return self.path(dataset_id) / items[index][1]

    def thumbnail(self, dataset_id: str, index: int) -> bytes:
        """A PNG at most 96 px on a side (the files were checked when the dataset was made)."""
        path = self.image_path(dataset_id, index)
        try:
            with Image.open(path) as image:
                image.seek(0)
                thumb = image.convert("RGB")
                thumb.thumbnail((THUMBNAIL, THUMBNAIL))
        except OSError as exc:  # the file went missing from the data dir
            raise NotFound(f"image {index} of dataset {dataset_id!r} is missing on disk: {exc}.") from exc
        return encode_png(thumb)

    def delete(self, dataset_id: str) -> None:
        self.get(dataset_id)
        busy = self.registry.jobs_using(dataset_id, ACTIVE)
        if busy:
            raise Conflict(
                f"dataset {dataset_id!r} is used by job {busy[0]!r}; cancel it first "
                f"(DELETE /api/finetune/{busy[0]})."
            )
        self.registry.delete("datasets", dataset_id)
        shutil.rmtree(self.path(dataset_id), ignore_errors=True)
