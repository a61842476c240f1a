from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from app.core.config import Settings
from app.core.errors import InvalidParameter, NotFound
from app.services.image_store import ImageStore


def test_least_recently_used_images_leave_a_full_cache(tmp_path: Path, make_image: Callable[..., bytes]) -> None:
    store = ImageStore(Settings(data_dir=tmp_path, image_cache_items=2))
    a, b = store.add(make_image(), "a"), store.add(make_image(), "b")
    store.get(a.image_id)  # a is now more recent than b
    c = store.add(make_image(), "c")
    assert store.get(a.image_id) is a and store.get(c.image_id) is c
    with pytest.raises(NotFound, match="upload it again"):
        store.get(b.image_id)


def test_the_byte_bound_is_kept(tmp_path: Path, make_image: Callable[..., bytes]) -> None:
    store = ImageStore(Settings(data_dir=tmp_path, image_cache_bytes=100 * 100 * 3 * 2))
    ids = [store.add(make_image("RGB", (100, 100)), str(i)).image_id for i in range(5)]
    kept = [i for i in ids if _has(store, i)]
    assert kept == ids[-2:]


def _has(store: ImageStore, image_id: str) -> bool:
    try:
        store.get(image_id)
        return True
    except NotFound:
        return False


def test_resolve_takes_exactly_one_reference(tmp_path: Path) -> None:
    store = ImageStore(Settings(data_dir=tmp_path))
    assert store.resolve(None, "cat").image.size == (451, 300)
    with pytest.raises(InvalidParameter, match="exactly one"):
        store.resolve(None, None)
    with pytest.raises(InvalidParameter, match="exactly one"):
        store.resolve("abc", "cat")
    with pytest.raises(NotFound, match="unknown sample 'dog'; choose one of: cat, coffee"):
        store.resolve(None, "dog")
