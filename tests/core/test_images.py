"""Image intake: every format, mode and refusal, each from a real file made here."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from app.core.errors import InvalidParameter, PayloadTooLarge, UnsupportedMediaType
from app.core.images import decode_image
from tests.conftest import encode

LIMITS = {"max_bytes": 20_000_000, "max_pixels": 40_000_000}


def pixels(image: Image.Image) -> list[tuple[int, ...]]:
    return [tuple(int(c) for c in px) for px in np.asarray(image).reshape(-1, 3)]


def decode(data: bytes, **limits: int) -> Image.Image:
    return decode_image(data, **{**LIMITS, **limits}).image


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("JPEG", "JPEG"), ("PNG", "PNG"), ("WEBP", "WebP"), ("GIF", "GIF"), ("BMP", "BMP"), ("TIFF", "TIFF")],
)
def test_each_format_decodes_to_rgb(make_image: Callable[..., bytes], fmt: str, expected: str) -> None:
    decoded = decode_image(make_image("RGB", (40, 30), fmt), **LIMITS)
    assert decoded.format == expected
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == (40, 30)


def test_lossless_png_keeps_every_pixel(make_image: Callable[..., bytes]) -> None:
    data = make_image("RGB", (16, 8), "PNG")
    assert np.array_equal(np.asarray(decode(data)), np.asarray(Image.open(io.BytesIO(data))))


def test_gif_keeps_the_first_frame() -> None:
    red, blue = Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))
    data = encode(red, "GIF", save_all=True, append_images=[blue], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert decode(data).getpixel((4, 4)) == (255, 0, 0)


@pytest.mark.parametrize(("orientation", "size"), [(1, (40, 20)), (3, (40, 20)), (6, (20, 40)), (8, (20, 40))])
def test_exif_orientation_is_applied(orientation: int, size: tuple[int, int]) -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 10, 10))  # a white mark in the top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = decode(encode(image, "JPEG", exif=exif, quality=95))
    assert out.size == size
    # where the mark ends up tells the rotation: 3 = 180°, 6 = 90° clockwise, 8 = 90° anticlockwise
    corner = {1: (2, 2), 3: (37, 17), 6: (17, 2), 8: (2, 37)}[orientation]
    assert min(out.getpixel(corner)) > 200


def test_transparent_pixels_become_white_and_opaque_ones_keep_their_colour() -> None:
    rgba = Image.new("RGBA", (4, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (10, 200, 30, 255))
    rgba.putpixel((2, 0), (0, 0, 0, 128))  # half transparent black over white: mid grey
    out = decode(encode(rgba, "PNG"))
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 0)) == (10, 200, 30)
    assert all(abs(c - 127) <= 1 for c in out.getpixel((2, 0)))


def test_grey_with_alpha_and_palette_with_transparency() -> None:
    la = Image.new("LA", (2, 1), (0, 0))
    la.putpixel((1, 0), (60, 255))
    assert pixels(decode(encode(la, "PNG"))) == [(255, 255, 255), (60, 60, 60)]
    p = Image.new("P", (2, 1), 0)
    p.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    p.putpixel((1, 0), 1)
    assert pixels(decode(encode(p, "PNG", transparency=0))) == [(255, 255, 255), (200, 10, 10)]
    assert pixels(decode(encode(p, "PNG"))) == [(0, 0, 0), (200, 10, 10)]


def test_16_bit_grey_is_scaled_to_8_bits() -> None:
    values = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    data = encode(Image.fromarray(values), "PNG")  # a 16-bit greyscale PNG
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    assert pixels(decode(data)) == [(0, 0, 0), (100, 100, 100), (255, 255, 255)]


def test_cmyk_l_bilevel_and_float_modes() -> None:
    cmyk = Image.new("CMYK", (2, 2), (0, 255, 255, 0))  # pure red in CMYK
    assert decode(encode(cmyk, "JPEG", quality=100)).getpixel((0, 0))[0] > 240
    assert decode(encode(Image.new("L", (2, 2), 77), "PNG")).getpixel((1, 1)) == (77, 77, 77)
    assert decode(encode(Image.new("1", (2, 2), 1), "BMP")).getpixel((0, 0)) == (255, 255, 255)
    f = Image.fromarray(np.array([[-5.0, 42.4, 300.0]], dtype=np.float32), "F")
    assert pixels(decode(encode(f, "TIFF"))) == [(0, 0, 0), (42, 42, 42), (255, 255, 255)]


def test_too_many_bytes_is_refused_before_parsing() -> None:
    with pytest.raises(PayloadTooLarge, match="limit is 100 bytes"):
        decode_image(b"\x00" * 101, max_bytes=100, max_pixels=10)


def test_too_many_pixels_is_refused_from_the_header(make_image: Callable[..., bytes]) -> None:
    with pytest.raises(PayloadTooLarge, match="64x48 = 3,072 pixels; the limit is 3,000"):
        decode(make_image("RGB", (64, 48), "PNG"), max_pixels=3000)


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG header that claims a huge size, followed by a few bytes of pixel data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(
        b"IEND", b""
    )


def test_a_small_png_declaring_30000_squared_is_refused_without_allocating() -> None:
    data = _png_declaring(30000, 30000)
    assert len(data) < 200
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge, match="pixels"):
            decode(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000  # the image would be 2.7 GB


def test_not_an_image_and_empty_are_415() -> None:
    with pytest.raises(UnsupportedMediaType, match="not an image"):
        decode(b"hello, I am text")
    with pytest.raises(UnsupportedMediaType, match="empty"):
        decode(b"")


def test_a_format_outside_the_list_is_415_and_named(make_image: Callable[..., bytes]) -> None:
    with pytest.raises(UnsupportedMediaType, match="is a PPM image; send JPEG, PNG"):
        decode(make_image("RGB", (8, 8), "PPM"))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files_are_422(make_image: Callable[..., bytes], fmt: str) -> None:
    data = make_image("RGB", (64, 64), fmt)
    with pytest.raises(InvalidParameter, match="truncated"):
        decode(data[: len(data) // 2])


def test_corrupt_pixel_data_is_422() -> None:
    data = bytearray(_png_declaring(64, 64))
    with pytest.raises(InvalidParameter, match="PNG"):
        decode(bytes(data))
