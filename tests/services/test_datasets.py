"""Safe zip unpacking: the ImageFolder layout, zip-slip, bombs, non-images, too few classes or images."""

from __future__ import annotations

import io
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from app.core.config import Settings
from app.core.errors import InvalidParameter, PayloadTooLarge
from app.services.datasets import DatasetStore, demo_images, unpack_zip
from app.services.registry import Registry


def make_zip(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path)


@pytest.fixture
def png(make_image: Callable[..., bytes]) -> bytes:
    return make_image("RGB", (20, 16), "PNG")


def test_imagefolder_zip_is_read_and_non_images_are_reported(
    settings: Settings, png: bytes, make_image
) -> None:
    jpeg = make_image("RGB", (20, 16), "JPEG")
    data = make_zip(
        {
            "pets/cats/a.png": png,
            "pets/cats/b.jpg": jpeg,
            "pets/dogs/c.png": png,
            "pets/dogs/d.png": png,
            "pets/dogs/notes.txt": b"hello",
            "pets/dogs/broken.png": png[:40],
            "pets/.DS_Store": b"x",
            "__MACOSX/pets/cats/._a.png": b"junk",
        }
    )
    out = unpack_zip(data, settings)
    assert out.classes == ["cats", "dogs"]
    assert [(label, ext) for label, _, ext in out.items] == [
        (0, ".png"),
        (0, ".jpg"),
        (1, ".png"),
        (1, ".png"),
    ]
    assert [s["file"] for s in out.skipped] == ["pets/dogs/notes.txt", "pets/dogs/broken.png"]
    assert "not an image" in out.skipped[0]["reason"]


def test_files_outside_class_folders_are_skipped(settings: Settings, png: bytes) -> None:
    out = unpack_zip(
        make_zip({"readme.png": png, "a/1.png": png, "a/2.png": png, "b/3.png": png, "b/4.png": png}),
        settings,
    )
    assert out.classes == ["a", "b"]
    assert out.skipped == [{"file": "readme.png", "reason": "not inside a class folder"}]


def test_a_wrapper_folder_with_a_loose_file_is_still_stripped(settings: Settings, png: bytes) -> None:
    entries = {f"top/{c}/{i}.png": png for c in ("a", "b") for i in range(2)}
    out = unpack_zip(make_zip({**entries, "top/README.txt": b"about this set"}), settings)
    assert out.classes == ["a", "b"]
    assert len(out.items) == 4
    assert out.skipped == [{"file": "top/README.txt", "reason": "not inside a class folder"}]


@pytest.mark.parametrize(
    "evil", ["../evil/x.png", "a/../../x.png", "/etc/x.png", "C:/x.png", "a\\..\\..\\x.png"]
)
def test_zip_slip_is_refused(settings: Settings, png: bytes, evil: str) -> None:
    data = make_zip({"a/1.png": png, "a/2.png": png, "b/3.png": png, "b/4.png": png, evil: png})
    with pytest.raises(InvalidParameter, match="zip-slip"):
        unpack_zip(data, settings)


def test_symlink_entries_are_refused(settings: Settings, png: bytes) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in ("a/1.png", "a/2.png", "b/3.png", "b/4.png"):
            archive.writestr(name, png)
        link = zipfile.ZipInfo("b/link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    with pytest.raises(InvalidParameter, match="link"):
        unpack_zip(buffer.getvalue(), settings)


def test_zip_bomb_by_ratio_is_refused_before_decompressing(settings: Settings, png: bytes) -> None:
    data = make_zip({"a/1.png": png, "a/2.png": png, "b/3.png": png, "b/bomb.png": b"\0" * 20_000_000})
    assert len(data) < 100_000
    with pytest.raises(PayloadTooLarge, match="compression ratio"):
        unpack_zip(data, settings)


def test_unpacked_size_and_entry_count_limits(tmp_path: Path, png: bytes) -> None:
    data = make_zip({f"{c}/{i}.png": png for c in "ab" for i in range(3)})
    with pytest.raises(PayloadTooLarge, match="unpacks to"):
        unpack_zip(data, Settings(data_dir=tmp_path, dataset_max_unpacked_bytes=len(png) * 5))
    with pytest.raises(PayloadTooLarge, match="6 entries; the limit is 5"):
        unpack_zip(data, Settings(data_dir=tmp_path, dataset_max_files=5))
    with pytest.raises(PayloadTooLarge, match="the zip is"):
        unpack_zip(data, Settings(data_dir=tmp_path, dataset_max_zip_bytes=100))


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"a/1.png": "png", "a/2.png": "png"}, "at least 2 class folders"),
        ({"a/1.png": "png", "a/2.png": "png", "b/3.png": "png"}, r"too few in: b \(1\)"),
        ({"a/1.png": "png", "a/2.png": "png", "b/": ""}, r"too few in: b \(0\)"),
        ({"a/1.png": "png", "a/2.png": "png", "b/x.txt": "text"}, r"too few in: b \(0\)"),
    ],
)
def test_too_few_classes_or_images(
    settings: Settings, png: bytes, entries: dict[str, str], message: str
) -> None:
    data = make_zip({k: (png if v == "png" else v.encode()) for k, v in entries.items()})
    with pytest.raises(InvalidParameter, match=message):
        unpack_zip(data, settings)


@pytest.mark.parametrize("data", [b"", b"PK\x03\x04 not really", b"just text"])
def test_corrupt_zip(settings: Settings, data: bytes) -> None:
    with pytest.raises(InvalidParameter, match="not a readable zip"):
        unpack_zip(data, settings)


def test_demos_ship_offline() -> None:
    digits = demo_images("digits", 3)
    assert digits.classes == [str(d) for d in range(10)]
    assert [label for label, _, _ in digits.items] == [d for d in range(10) for _ in range(3)]
    faces = demo_images("faces", 2)
    assert faces.classes == ["face", "not_face"] and len(faces.items) == 4


def test_store_writes_files_then_records_and_deletes(settings: Settings, png: bytes) -> None:
    store = DatasetStore(settings, Registry(settings.data_dir / "r.sqlite3"))
    doc = store.create_from_zip(
        make_zip({"a/1.png": png, "a/2.png": png, "b/3.png": png, "b/4.png": png}), "ab"
    )
    assert doc["classes"] == [{"name": "a", "count": 2}, {"name": "b", "count": 2}]
    assert sorted(p.name for p in store.path(doc["id"]).iterdir()) == [
        "00000.png",
        "00001.png",
        "00002.png",
        "00003.png",
    ]
    assert [d["id"] for d in store.all()] == [doc["id"]]
    assert store.thumbnail(doc["id"], 0).startswith(b"\x89PNG")
    assert not [p for p in store.root.iterdir() if p.name.startswith(".tmp")]
    store.delete(doc["id"])
    assert store.all() == [] and not store.path(doc["id"]).exists()
