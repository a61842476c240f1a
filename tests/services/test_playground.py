"""The playground service's picture encoding and image scaling."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from app.services.playground import PNG_MAX_PIXELS, encode, scaled


def decoded(url: str) -> tuple[str, Image.Image]:
    header, data = url.split(",", 1)
    return header, Image.open(io.BytesIO(base64.b64decode(data)))


def test_auto_format_is_png_when_small_and_jpeg_when_large() -> None:
    small = np.arange(256 * 256 * 3, dtype=np.uint32).reshape(256, 256, 3).astype(np.uint8)
    assert small.shape[0] * small.shape[1] == PNG_MAX_PIXELS
    url, size = encode(small, "auto", 10**7)
    header, image = decoded(url)
    assert header == "data:image/png;base64" and size == (256, 256)
    assert np.array_equal(np.asarray(image), small)  # lossless
    url, size = encode(np.zeros((257, 256), dtype=np.uint8), "auto", 10**7)
    assert decoded(url)[0] == "data:image/jpeg;base64" and size == (256, 257)
    assert decoded(encode(small, "webp", 10**7)[0])[0] == "data:image/webp;base64"


def test_pictures_over_the_render_limit_are_scaled_down() -> None:
    url, size = encode(np.full((400, 100, 3), 200, dtype=np.uint8), "png", 10_000)
    assert size == (50, 200)
    assert decoded(url)[1].size == (50, 200)


def test_scaled_never_enlarges() -> None:
    image = Image.new("RGB", (300, 200))
    assert scaled(image, 512) is image
    assert scaled(image, 150).size == (150, 100)
